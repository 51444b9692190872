"""A bounded record of an endless series (per-window times, final latencies): the newest values and a
count of all of them, so a server or a long live session keeps a fixed amount however long it runs."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import overload

DEFAULT_KEEP = 10_000


class Recent:
    """The last ``keep`` values appended, and ``total``: how many were ever appended."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self._values: deque[float] = deque(maxlen=keep)
        self.total = 0

    def append(self, value: float) -> None:
        self._values.append(value)
        self.total += 1

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.append(value)

    def since(self, mark: int) -> list[float]:
        """The values appended after ``total`` was ``mark`` (those still kept)."""
        count = min(self.total - mark, len(self._values))
        return list(self._values)[len(self._values) - count :] if count > 0 else []

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[float]:
        return iter(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: int | slice) -> float | list[float]:
        if isinstance(index, slice):
            return list(self._values)[index]
        return self._values[index]
