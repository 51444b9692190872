"""A streamcli server on a free port of 127.0.0.1, run in a thread for the serve tests."""

from __future__ import annotations

import threading
import time

from streamcli.serve import ServeConfig, Server


class Running:
    def __init__(self, recognizer, **config) -> None:
        ports: list[int] = []
        self.server = Server(recognizer, ServeConfig(port=0, **config), on_ready=ports.append)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not ports and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"ws://127.0.0.1:{ports[0]}/"
        self.http = f"http://127.0.0.1:{ports[0]}/"

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=30)
