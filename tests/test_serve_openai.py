"""The OpenAI-compatible endpoints of streamcli serve, through the official openai SDK pointed at a local
server (no network): REST transcription in every format, streaming, errors in OpenAI's shape; the
Realtime transcription session; health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import urllib.request

import pytest
from serve_helpers import FILE_A, Running, small_recognizer

from streamcli.formats import render
from streamcli.transcription import transcribe

openai = pytest.importorskip("openai")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


@pytest.fixture(scope="module")
def recognizer():
    return small_recognizer()


@pytest.fixture(scope="module")
def server(recognizer):
    running = Running(recognizer, max_upload_bytes=2 * 1024 * 1024)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def expected(recognizer):
    return list(transcribe(str(FILE_A), recognizer)[0])


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.http + "v1", api_key="unused", max_retries=0, timeout=60)


def test_rest_transcription_in_every_format_equals_transcribe(client, expected):
    text = " ".join(s.text for s in expected)
    with FILE_A.open("rb") as f:
        assert client.audio.transcriptions.create(file=f, model="whisper-1").text == text
    with FILE_A.open("rb") as f:
        assert (
            client.audio.transcriptions.create(file=f, model="whisper-1", response_format="text").strip()
            == text
        )
    for fmt in ("srt", "vtt"):
        with FILE_A.open("rb") as f:
            body = client.audio.transcriptions.create(file=f, model="whisper-1", response_format=fmt)
        assert body == render(expected, fmt)
    with FILE_A.open("rb") as f:
        verbose = client.audio.transcriptions.create(
            file=f,
            model="whisper-1",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert verbose.text == text and verbose.language == "english"
    assert [s.text for s in verbose.segments] == [s.text for s in expected]
    words = [w for s in expected for w in s.words]
    assert [(w.word, w.start, w.end) for w in verbose.words] == [(w.word, w.start, w.end) for w in words]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(verbose.words, verbose.words[1:], strict=False))
    assert verbose.duration > 0 and verbose.segments[-1].end <= verbose.duration + 0.5


def test_rest_streaming_gives_a_delta_per_segment_then_done(client, expected):
    with FILE_A.open("rb") as f:
        events = list(client.audio.transcriptions.create(file=f, model="whisper-1", stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) == len(expected) and events[-1].type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == events[-1].text == " ".join(s.text for s in expected)


def test_models_lists_the_loaded_model_first(client, recognizer):
    names = [m.id for m in client.models.list()]
    assert names[0] == recognizer.info.name and "streamcli-wctc-en-small" in names


@pytest.mark.parametrize(
    "kwargs,status,words",
    [
        ({"file": ("notes.wav", b"this is not audio at all")}, 400, "cannot read the upload as audio"),
        ({"file": ("empty.wav", b"")}, 400, "empty"),
        ({"response_format": "docx"}, 400, "response_format must be one of"),
        ({"language": "de"}, 400, "English only"),
        ({"timestamp_granularities": ["word"], "response_format": "json"}, 400, "verbose_json"),
        ({"file": ("big.wav", b"\0" * (3 * 1024 * 1024))}, 413, "over the limit"),
    ],
)
def test_rest_errors_have_the_openai_shape(client, kwargs, status, words):
    args = {"model": "whisper-1", **kwargs}
    if "file" not in args:
        args["file"] = FILE_A.open("rb")
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(**args)
    assert caught.value.status_code == status
    error = caught.value.body.get("error", caught.value.body)
    assert words in error["message"] and error["type"] and error["code"]


def test_an_endless_upload_is_refused_at_the_limit_while_it_streams(server):
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    boundary = "b0undary"
    conn.putrequest("POST", "/v1/audio/transcriptions")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    sent = 0
    try:
        conn.send(b"%x\r\n%s\r\n" % (len(head), head))
        block = b"\0" * 65536
        for _ in range(2048):  # would be 128 MiB; the limit is 2 MiB
            conn.send(b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    assert response.status == 413 and "over the limit" in json.loads(response.read())["error"]["message"]
    assert sent < 64 * 1024 * 1024


def test_health_readiness_and_metrics_move_with_a_stream(server, client):
    assert json.loads(urllib.request.urlopen(server.http + "healthz", timeout=5).read())["alive"] is True
    ready = json.loads(urllib.request.urlopen(server.http + "readyz", timeout=5).read())
    assert ready["ready"] is True and ready["model"]

    def metrics() -> dict[str, float]:
        text = urllib.request.urlopen(server.http + "metrics", timeout=5).read().decode()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
                values[key] = sample.value
        return values

    before = metrics()
    assert "streamcli_streams_open" in before and "streamcli_final_latency_seconds_count" in before
    asyncio.run(_realtime_session(server, rate=16000))
    after = metrics()
    assert after["streamcli_audio_seconds_total"] > before["streamcli_audio_seconds_total"] + 5
    assert (
        after["streamcli_streams_total{protocol=realtime}"]
        == before.get("streamcli_streams_total{protocol=realtime}", 0) + 1
    )
    assert (
        after["streamcli_first_pass_batch_seconds_count"] > before["streamcli_first_pass_batch_seconds_count"]
    )


async def _realtime_session(server, rate: int, pace_s: float = 0.0) -> list:
    """Streams FILE_A through the SDK's Realtime client; returns every server event until quiet."""
    import numpy as np
    import soundfile as sf

    from streamcli.audio import resample

    audio, file_rate = sf.read(str(FILE_A), dtype="float32")
    if rate != file_rate:
        audio = resample(audio, file_rate, rate)
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    client = openai.AsyncOpenAI(base_url=server.http + "v1", api_key="unused")
    events = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        events.append(await conn.recv())
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": rate},
                        "transcription": {"model": "streamcli"},
                        "turn_detection": {"type": "server_vad"},
                    }
                },
            }
        )
        step = int(rate * 0.2) * 2
        for i in range(0, len(pcm), step):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + step]).decode())
            if pace_s:
                await asyncio.sleep(pace_s)
        await conn.input_audio_buffer.commit()
        while True:
            try:
                events.append(await asyncio.wait_for(conn.recv(), 3.0))
            except TimeoutError:
                break
    return events


def test_realtime_session_streams_deltas_and_completes_with_transcribes_text(server, expected):
    # Appended at 4x real time: text grows while the audio streams (all at once, one tick may decode
    # the whole file and an item can complete without a delta before it).
    events = asyncio.run(_realtime_session(server, rate=16000, pace_s=0.05))
    types = [e.type for e in events]
    assert types[0] == "session.created" and "session.updated" in types
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert " ".join(e.transcript for e in completed if e.transcript) == " ".join(s.text for s in expected)
    for item in {e.item_id for e in completed}:
        mine = [e for e in events if getattr(e, "item_id", None) == item]
        kinds = [e.type for e in mine]
        assert kinds[0] == "input_audio_buffer.speech_started" and kinds[-1].endswith("completed")
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
        deltas = "".join(e.delta for e in mine if e.type.endswith(".delta"))
        assert mine[-1].transcript.startswith(deltas)  # the deltas are a prefix of the final text
    assert any(e.type.endswith(".delta") for e in events)
    assert not [e for e in events if e.type == "error"]


def test_realtime_at_24khz_as_the_api_specifies(server, expected):
    events = asyncio.run(_realtime_session(server, rate=24000))
    completed = " ".join(e.transcript for e in events if e.type.endswith("transcription.completed"))
    reference = set(" ".join(s.text for s in expected).split())
    assert len(set(completed.split()) & reference) >= 0.8 * len(reference)


def test_realtime_bad_events_get_error_events_and_the_session_goes_on(server):
    import websockets.sync.client as ws_client

    url = server.url + "v1/realtime?intent=transcription"
    with ws_client.connect(url) as ws:
        assert json.loads(ws.recv(5))["type"] == "session.created"
        for bad, code in (
            ("{nope", "invalid_event"),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": "***not base64***"}),
                "invalid_base64",
            ),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0").decode()}),
                "invalid_audio",
            ),
            (
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
                    }
                ),
                "invalid_value",
            ),
            (json.dumps({"type": "response.create"}), "invalid_event"),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        ):
            ws.send(bad)
            event = json.loads(ws.recv(5))
            assert event["type"] == "error" and event["error"]["code"] == code, event
            assert event["error"]["message"]
        ws.send(
            json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0" * 3200).decode()}
            )
        )
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert json.loads(ws.recv(5))["type"] == "input_audio_buffer.cleared"


def test_realtime_audio_after_a_commit_starts_the_next_turn(server):
    import websockets.sync.client as ws_client
    from serve_helpers import pcm16

    pcm = pcm16(FILE_A)
    half = len(pcm) // 2 // 6400 * 6400
    url = server.url + "v1/realtime?intent=transcription"
    events: list[dict] = []
    with ws_client.connect(url) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                    },
                }
            )
        )
        for part in (pcm[:half], pcm[half:]):
            for i in range(0, len(part), 6400):
                ws.send(
                    json.dumps(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(part[i : i + 6400]).decode(),
                        }
                    )
                )
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while True:
            try:
                events.append(json.loads(ws.recv(3)))
            except TimeoutError:
                break
    completed = [e for e in events if e["type"].endswith("transcription.completed") and e["transcript"]]
    starts = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
    assert len(completed) >= 2, [e["type"] for e in events]  # one turn per commit at least
    assert starts == sorted(starts) and starts[-1] >= half // 32  # times go on across the commit (ms)
    assert not [e for e in events if e["type"] == "error"]
