"""streamcli.bench pieces that need no model: sweep planning, config validation, JSON, plot, audio."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamcli import bench


def test_sweep_gives_every_valid_w_o_pair_and_explains_the_rest():
    valid, skipped = bench.plan_configs("wctc", (200, 50), [50, 100, 200, 400], [0, 25, 50], subsampling=5)
    # O=50 with W=50 is the only pair where the overlap is not smaller than the window.
    assert len(valid) + len(skipped) == 12
    assert (50, 50) not in valid
    assert [(w, o) for w, o, _ in skipped] == [(50, 50)]
    assert "overlap must be smaller than the window" in skipped[0][2]
    assert all(o < w for w, o in valid)
    assert sorted(valid) == sorted({(w, o) for w in (50, 100, 200, 400) for o in (0, 25, 50)} - {(50, 50)})


def test_sweep_rejects_frame_counts_the_encoder_cannot_stack():
    valid, skipped = bench.plan_configs("wctc", (200, 50), [200, 203], [50, 52], subsampling=5)
    assert valid == [(200, 50)]
    reasons = {(w, o): r for w, o, r in skipped}
    assert set(reasons) == {(200, 52), (203, 50), (203, 52)}
    assert all("multiples of 5" in r for r in reasons.values())


def test_default_window_is_the_models_own():
    valid, skipped = bench.plan_configs("wctc", (200, 50), None, None, subsampling=5)
    assert valid == [(200, 50)] and skipped == []
    valid, _ = bench.plan_configs("wctc", (200, 50), [400], None, subsampling=5)
    assert valid == [(400, 50)]


def test_fixed_chunk_model_measures_native_and_explains_a_requested_window():
    valid, skipped = bench.plan_configs(
        "zipformer-transducer", (96, 64), [200], [50], subsampling=4, shift_frames=32
    )
    assert valid == [(96, 64)]
    assert len(skipped) == 1
    w, o, reason = skipped[0]
    assert (w, o) == (200, 50)
    assert "fixed chunking" in reason and "native chunk 32 frames (320 ms)" in reason
    assert "W=96, O=64" in reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"streams": 0}, "--streams"),
        ({"lengths_s": (60.0, 10.0)}, "increasing"),
        ({"lengths_s": (0.0,)}, "positive"),
        ({"threads": -1}, "--threads"),
        ({"peer": "whisper"}, "sherpa-onnx"),
        ({"devices": ()}, "--device"),
        ({"realtime_s": -1.0}, "--realtime-seconds"),
    ],
)
def test_config_is_validated_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.BenchConfig(model=None, **kwargs)


def test_option_lists_parse_and_reject_garbage():
    assert bench.parse_int_list("50, 100,200", "--window") == (50, 100, 200)
    assert bench.parse_float_list("10,60,600", "--lengths") == (10.0, 60.0, 600.0)
    assert bench.parse_devices("cpu,cuda") == ("cpu", "cuda")
    with pytest.raises(ValueError, match="--window"):
        bench.parse_int_list("200ms", "--window")
    with pytest.raises(ValueError, match="--lengths"):
        bench.parse_float_list(",", "--lengths")


def test_percentiles_are_ordered_and_match_numpy():
    values = list(np.random.default_rng(1).gamma(2.0, 3.0, size=500))
    p = bench.Percentiles.of(values)
    assert p.p50 <= p.p95 <= p.p99 <= p.max == max(values)
    assert p.p50 == pytest.approx(float(np.median(values)))
    with pytest.raises(ValueError):
        bench.Percentiles.of([])


def test_looped_audio_wraps_around_and_readers_are_independent():
    audio = bench.LoopedAudio(np.arange(3200, dtype=np.float32), "ramp")
    a, b = audio.reader(0), audio.reader(3000)
    first = a.take(5000)
    assert first[3199] == 3199 and first[3200] == 0 and first[4999] == 1799
    assert b.take(300).tolist() == [*range(3000, 3200), *range(0, 100)]
    assert a.take(2).tolist() == [1800, 1801]
    with pytest.raises(ValueError):
        bench.LoopedAudio(np.zeros(10, dtype=np.float32), "tiny")


def test_synthetic_audio_is_deterministic_and_in_range():
    x = bench.synthetic_speechlike(2.0, seed=3)
    assert x.dtype == np.float32 and x.size == 32000
    assert np.abs(x).max() <= 0.3 + 1e-6 and np.abs(x).max() > 0.1
    assert np.array_equal(x, bench.synthetic_speechlike(2.0, seed=3))


def test_manifest_reader_resolves_relative_paths_and_reports_bad_rows(tmp_path):
    (tmp_path / "m.tsv").write_text("id\tpath\tduration_seconds\ttranscript\nu1\ta/x.wav\t1.0\thello there\n")
    rows = bench.read_manifest(tmp_path / "m.tsv")
    assert rows == [("u1", tmp_path / "a" / "x.wav", "hello there")]
    (tmp_path / "bad.tsv").write_text("name\tfile\n")
    with pytest.raises(ValueError, match="id, path and transcript"):
        bench.read_manifest(tmp_path / "bad.tsv")
    with pytest.raises(ValueError, match="no such manifest"):
        bench.read_manifest(tmp_path / "missing.tsv")


def _fake_result(w: int, o: int, t_proc: list[float]) -> bench.ConfigResult:
    hop = w - o
    p = bench.Percentiles.of(t_proc)
    return bench.ConfigResult(
        status="ok",
        reason=None,
        model="m",
        family="wctc",
        device="cpu",
        provider="CPUExecutionProvider",
        threads=1,
        window_frames=w,
        overlap_frames=o,
        hop_frames=hop,
        t_wait_ms=hop * 10.0,
        t_wait_mean_ms=hop * 5.0,
        t_proc_ms=p,
        total_ms={"p50": hop * 10.0 + p.p50, "p95": hop * 10.0 + p.p95},
        rtf=float(np.mean(t_proc)) / (hop * 10.0),
        keeps_up=p.p95 < hop * 10.0,
        cache_bytes=1000,
        per_length=[
            bench.LengthPoint(
                seconds=10.0,
                t_proc_ms_p50=p.p50,
                t_proc_ms_p95=p.p95,
                t_proc_ms_min=min(t_proc),
                t_encoder_ms_p50=p.p50 / 2,
                windows=3,
            )
        ],
    )


def test_json_is_written_atomically_with_the_documented_fields(tmp_path):
    results = [
        _fake_result(200, 50, [3.0, 4.0, 5.0]),
        bench.ConfigResult(
            status="skipped",
            reason="why",
            model="m",
            family="wctc",
            device="cuda",
            provider=None,
            threads=None,
            window_frames=200,
            overlap_frames=50,
            hop_frames=150,
        ),
    ]
    out = tmp_path / "sub" / "r.json"
    bench.write_json(results, out)
    data = json.loads(out.read_text())
    assert [d["status"] for d in data] == ["ok", "skipped"]
    ok = data[0]
    for key in (
        "window_frames",
        "overlap_frames",
        "hop_frames",
        "t_wait_ms",
        "t_proc_ms",
        "total_ms",
        "rtf",
        "keeps_up",
        "device",
        "per_length",
    ):
        assert key in ok
    assert set(ok["t_proc_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(ok["total_ms"]) == {"p50", "p95"}
    assert set(ok["per_length"][0]) >= {"seconds", "t_proc_ms_p50", "full_context_ms_p50"}
    assert data[1]["reason"] == "why" and data[1]["t_proc_ms"] is None
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    results = [_fake_result(w, o, [1.0 + w / 100, 2.0 + w / 100]) for w in (50, 100, 200) for o in (0, 25)]
    out = tmp_path / "lat.png"
    bench.plot_latency(results, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no measured"):
        bench.plot_latency([], tmp_path / "none.png")


def test_the_runtime_imports_neither_torch_nor_matplotlib_nor_ray():
    code = (
        # the runtime: every command's module, the families, the second pass, the server, the cluster
        "import sys, streamcli.bench, streamcli.cli, streamcli.transcription, streamcli.live, "
        "streamcli.serve, streamcli.families.wctc, streamcli.families.zipformer, "
        "streamcli.whisper.second_pass, streamcli.cluster, streamcli.cli.ray_run; "
        "bad = [m for m in ('torch', 'matplotlib', 'ray') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plot_without_matplotlib_is_one_line_before_any_work(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from streamcli.cli import app

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = CliRunner().invoke(
        app, ["bench", "--model", str(tmp_path / "nowhere"), "--plot", str(tmp_path / "p.png")]
    )
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == ["error: --plot needs matplotlib: pip install 'streamcli[plot]'"]
    assert not (tmp_path / "p.png").exists()


def test_full_context_failure_becomes_a_note_for_that_and_longer_lengths():
    class TooBig:
        subsampling = 5
        feature_type = "kaldi_fbank"

        def __init__(self) -> None:
            self.calls: list[int] = []

        def encode_ms(self, features: np.ndarray) -> float:
            self.calls.append(features.shape[0])
            if features.shape[0] > 200:
                raise RuntimeError("Failed to allocate memory for requested buffer of size 123\nmore")
            return 2.0

    audio = bench.LoopedAudio(bench.synthetic_speechlike(2.0), "noise")
    enc = TooBig()
    out = bench.measure_full_context(enc, audio, [1.0, 3.0, 5.0], reps=2, budget_s=10.0)
    assert out[0] == (2.0, 2, 100, None)
    reason = "baseline failed at 3 s: Failed to allocate memory for requested buffer of size 123"
    assert out[1] == (None, 0, 300, reason)
    assert out[2] == (None, 0, 500, reason)
    assert 500 not in enc.calls  # nothing longer is tried after a failure
