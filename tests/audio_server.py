"""A private PulseAudio server with a null sink, for end-to-end tests of `streamcli live`.

The server runs in the foreground of a child process with every path (socket, runtime, state, home)
inside one temporary folder, so it needs no session bus, no logged-in user and no existing audio
setup, and works as root (PulseAudio only warns about root in per-user mode). Clients reach it through
``env``: ``PULSE_SERVER`` points at the private socket, ``PULSE_SINK`` at the null sink (paplay plays
into it) and ``PULSE_SOURCE`` at the sink's monitor (what ALSA's ``pulse`` device, and through it
PortAudio, records). Autospawn is off, so a client never starts a second server by accident.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SINK_NAME = "streamcli_null"
BINARIES = ("pulseaudio", "pactl", "paplay")


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


class PulseAudioServer:
    """``start()`` launches and waits until the server answers; ``stop()`` always ends it."""

    def __init__(self, *, sink_rate_hz: int = 48000, sink_channels: int = 2) -> None:
        # A short folder under /tmp: unix socket paths are limited to ~108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="streamcli-pa-"))
        self.socket = self.root / "native"
        self.log_path = self.root / "pulseaudio.log"
        self.sink_rate_hz = sink_rate_hz
        self.sink_channels = sink_channels
        self.process: subprocess.Popen[bytes] | None = None
        config = self.root / "server.pa"
        config.write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            f"load-module module-null-sink sink_name={SINK_NAME} rate={sink_rate_hz} "
            f"channels={sink_channels} sink_properties=device.description=streamcli-null\n"
            f"set-default-sink {SINK_NAME}\n"
            f"set-default-source {SINK_NAME}.monitor\n"
        )
        self.config = config
        client_conf = self.root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        for sub in ("home", "runtime", "state"):
            (self.root / sub).mkdir()
        private = {
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "runtime"),
            "XDG_CONFIG_HOME": str(self.root / "home"),
            "PULSE_RUNTIME_PATH": str(self.root / "runtime"),
            "PULSE_STATE_PATH": str(self.root / "state"),
            "PULSE_CLIENTCONFIG": str(client_conf),
        }
        self.server_env = {**os.environ, **private}
        for name in ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE", "DBUS_SESSION_BUS_ADDRESS"):
            self.server_env.pop(name, None)
        self.env = {
            **self.server_env,
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_SINK": SINK_NAME,
            "PULSE_SOURCE": f"{SINK_NAME}.monitor",
        }

    def start(self, timeout_s: float = 15.0) -> None:
        command = [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disable-shm=yes",
            "--realtime=no",
            "--high-priority=no",
            "--log-target=stderr",
            "-n",  # no default.pa: only our three modules
            "-F",
            str(self.config),
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes to it for its lifetime
        self.process = subprocess.Popen(
            command, env=self.server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.process.returncode}: {self.log()}")
            probe = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=10)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not answer within {timeout_s} s: {self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def pactl(self, *args: str) -> str:
        done = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def recording_clients(self) -> int:
        """How many streams are recording from the server now (source outputs)."""
        return len([line for line in self.pactl("list", "short", "source-outputs").splitlines() if line])

    def play(self, path: str | os.PathLike[str], timeout_s: float = 120.0) -> None:
        """Plays a file into the null sink and returns when it has been played (at 1x)."""
        subprocess.run(["paplay", str(path)], env=self.env, check=True, timeout=timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def kill(self) -> None:
        """Ends the server abruptly (SIGKILL), as when the audio server crashes."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


@contextlib.contextmanager
def pulseaudio_server(**kwargs: int) -> Iterator[PulseAudioServer]:
    server = PulseAudioServer(**kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()
