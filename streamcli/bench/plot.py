"""The latency plot (matplotlib, the plot extra): window time against stream length."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from streamcli.bench.config import FRAME_MS
from streamcli.bench.schema import ConfigResult


def plot_latency(results: Sequence[ConfigResult], path: str | os.PathLike[str]) -> None:
    """Latency versus window, one line per (device, overlap).

    Left: total latency p50 (band to p95) with the waiting part as a dashed line. Right: the
    processing part T_proc alone (p50, band to p95), which the total's scale would hide.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.ok]
    if not ok:
        raise ValueError("--plot: no measured configuration to plot")
    fig, (ax, ax_proc) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    groups: dict[tuple[str, int], list[ConfigResult]] = {}
    for r in ok:
        groups.setdefault((r.device, r.overlap_frames), []).append(r)
    for (device, overlap), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.window_frames)
        xs = [r.window_frames * FRAME_MS for r in rs]
        p50 = [r.total_ms["p50"] for r in rs]
        (line,) = ax.plot(xs, p50, marker="o", label=f"{device} O={overlap}: total p50")
        color = line.get_color()
        ax.fill_between(xs, p50, [r.total_ms["p95"] for r in rs], color=color, alpha=0.15)
        ax.plot(
            xs,
            [r.t_wait_ms for r in rs],
            linestyle="--",
            color=color,
            alpha=0.7,
            label=f"{device} O={overlap}: wait (hop x 10 ms)",
        )
        proc50 = [r.t_proc_ms.p50 for r in rs]
        ax_proc.plot(xs, proc50, marker="o", color=color, label=f"{device} O={overlap}")
        ax_proc.fill_between(xs, proc50, [r.t_proc_ms.p95 for r in rs], color=color, alpha=0.15)
    ax.set_xlabel("window W (ms)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{ok[0].model}: latency vs window (band p50..p95)")
    ax_proc.set_xlabel("window W (ms)")
    ax_proc.set_ylabel("T_proc per window (ms)")
    ax_proc.set_title("processing per window (band p50..p95)")
    for a in (ax, ax_proc):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        # mkstemp made it 0600; a plot is an ordinary file (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
