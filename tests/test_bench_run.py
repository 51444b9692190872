"""streamcli bench on real (random-weight) models: a wctc encoder folder and the test zipformer.

Small lengths and few windows keep it fast; nothing here asserts a speed (those are measured by the
benchmark itself, not unit-tested). What is asserted: the schema, its internal consistency, the sweep
and its explanations, the batched-streams path, the CLI and its files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamcli import bench
from streamcli.cli import app

# Built in a subprocess so this test process never imports torch (the bench path must not need it).
_MAKE_WCTC = """
import sys, torch
from streamcli_tools.train.export import export_model_dir
from streamcli_tools.train.wctc_torch import WctcConfig, WctcModel, char_tokens
torch.manual_seed(0)
tokens = char_tokens()
cfg = WctcConfig(d_model=32, num_layers=2, num_heads=2, ff_dim=64, conv_kernel=5, vocab_size=len(tokens))
export_model_dir(WctcModel(cfg), sys.argv[1], 200, 50, tokens)
"""


@pytest.fixture(scope="module")
def wctc_dir(tmp_path_factory) -> Path:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        pytest.skip("building the test model needs the train extra (torch)")
    out = tmp_path_factory.mktemp("wctc_bench") / "tiny-wctc"
    proc = subprocess.run([sys.executable, "-c", _MAKE_WCTC, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _small(model: Path, **overrides) -> bench.BenchConfig:
    kwargs = dict(
        model=str(model),
        devices=("cpu",),
        threads=1,
        lengths_s=(2.0, 6.0),
        windows_per_length=4,
        warmup_windows=1,
        realtime_s=0.0,
        full_context_reps=2,
    )
    kwargs.update(overrides)
    return bench.BenchConfig(**kwargs)


def _check_consistent(r: bench.ConfigResult, lengths: tuple[float, ...]) -> None:
    assert r.status == "ok" and r.reason is None
    assert r.hop_frames == r.window_frames - r.overlap_frames > 0
    assert r.t_wait_ms == pytest.approx((r.hop_frames + r.lookahead_frames) * r.frame_ms)
    assert r.t_wait_mean_ms == pytest.approx((r.hop_frames / 2 + r.lookahead_frames) * r.frame_ms)
    p = r.t_proc_ms
    assert 0 < p.p50 <= p.p95 <= p.p99 <= p.max
    assert r.total_ms["p50"] >= r.t_wait_ms and r.total_ms["p95"] >= r.total_ms["p50"]
    assert r.total_ms["p50"] == pytest.approx(r.t_wait_ms + p.p50)
    assert r.rtf > 0 and r.keeps_up == (p.p95 < r.hop_frames * r.frame_ms)
    assert r.provider == "CPUExecutionProvider" and r.threads == 1
    assert r.cache_bytes > 0 and r.peak_rss_mb > 0
    assert [pt.seconds for pt in r.per_length] == list(lengths)
    assert all(
        pt.windows >= 1
        and 0 < pt.t_proc_ms_min <= pt.t_proc_ms_p50 <= pt.t_proc_ms_p95
        and pt.t_encoder_ms_p50 > 0
        for pt in r.per_length
    )
    # warm-up excluded; every window of the advancing and the measuring phase counted
    hop_s = r.hop_frames * r.frame_ms / 1000
    assert r.windows_measured >= sum(int(s / hop_s) for s in lengths) - 2 * len(lengths)
    assert r.flatness_ratio == pytest.approx(r.per_length[-1].t_proc_ms_p50 / r.per_length[0].t_proc_ms_p50)


def test_wctc_default_config_with_full_context_baseline(wctc_dir):
    results = bench.run_bench(_small(wctc_dir))
    assert len(results) == 1
    r = results[0]
    _check_consistent(r, (2.0, 6.0))
    assert (r.window_frames, r.overlap_frames, r.family) == (200, 50, "wctc")
    assert r.t_wait_ms == 1500.0 and r.t_wait_mean_ms == 750.0 and r.lookahead_frames == 0
    for pt in r.per_length:
        assert pt.full_context_ms_p50 > 0 and pt.full_context_reps >= 1
        assert pt.full_context_frames == int(pt.seconds * 100)
    assert r.full_context_growth == pytest.approx(
        r.per_length[-1].full_context_ms_p50 / r.per_length[0].full_context_ms_p50
    )
    # cache: per-layer K and V of O/5 frames + conv context + valid count, float32
    assert r.cache_bytes == 4 * (2 * 2 * 10 * 32 + 2 * 32 * 4 + 1)


def test_wctc_sweep_measures_valid_pairs_and_explains_the_others(wctc_dir):
    config = _small(
        wctc_dir,
        windows=(50, 100),
        overlaps=(0, 50),
        lengths_s=(1.0, 2.0),
        windows_per_length=2,
        full_context=False,
    )
    results = bench.run_bench(config)
    ok = {(r.window_frames, r.overlap_frames): r for r in results if r.ok}
    skipped = {(r.window_frames, r.overlap_frames): r for r in results if not r.ok}
    assert set(ok) == {(50, 0), (100, 0), (100, 50)}
    assert set(skipped) == {(50, 50)}
    assert "overlap must be smaller" in skipped[(50, 50)].reason
    assert skipped[(50, 50)].t_proc_ms is None
    for r in ok.values():
        _check_consistent(r, (1.0, 2.0))
        assert all(pt.full_context_ms_p50 is None for pt in r.per_length)
    # the cache holds O/5 frames per layer: more overlap, bigger cache
    assert ok[(100, 50)].cache_bytes > ok[(100, 0)].cache_bytes == ok[(50, 0)].cache_bytes


def test_full_context_beyond_the_cap_is_explained_not_measured(wctc_dir):
    r = bench.run_bench(_small(wctc_dir, full_context_max_s=3.0))[0]
    near, far = r.per_length
    assert near.full_context_ms_p50 is not None and near.full_context_note is None
    assert far.full_context_ms_p50 is None and "--full-context-max-s 3" in far.full_context_note


def test_batched_streams_report_how_many_keep_up(wctc_dir):
    r = bench.run_bench(_small(wctc_dir, streams=3, full_context=False))[0]
    assert [p.streams for p in r.streams] == [1, 2, 3]
    hop_ms = r.hop_frames * r.frame_ms
    for p in r.streams:
        assert p.windows == 4 and 0 < p.t_proc_ms_p50 <= p.t_proc_ms_p95
        assert p.keeps_up == (p.t_proc_ms_p95 < hop_ms)
    keeping = [p.streams for p in r.streams if p.keeps_up]
    assert r.streams_keeping_up == (max(keeping) if keeping else 0)


def test_realtime_run_measures_emission_latency(test_zipformer_dir):
    # The test zipformer emits tokens on speech-like energy, so the paced run has tokens to time.
    r = bench.run_bench(_small(test_zipformer_dir, lengths_s=(1.0, 2.0), realtime_s=2.0))[0]
    e = r.emission
    assert e.audio_seconds == pytest.approx(2.0) and e.block_ms == 20.0
    assert e.tokens > 0
    # a token can be emitted only after its chunk (and lookahead) has arrived
    assert e.p50_ms >= 0 and e.p50_ms <= e.p95_ms <= e.max_ms


def test_zipformer_is_measured_at_its_native_chunk_and_a_requested_window_explained(test_zipformer_dir):
    results = bench.run_bench(
        _small(test_zipformer_dir, windows=(200,), overlaps=(50,), lengths_s=(1.0, 2.0))
    )
    ok = [r for r in results if r.ok]
    skipped = [r for r in results if not r.ok]
    assert len(ok) == 1 and len(skipped) == 1
    r = ok[0]
    _check_consistent(r, (1.0, 2.0))
    assert r.family == "zipformer-transducer"
    assert r.hop_frames == 32 and r.lookahead_frames == 7  # decode_chunk_len 32, T 39
    assert r.full_context_growth is None and any("fixed chunk" in n for n in r.notes)
    s = skipped[0]
    assert (s.window_frames, s.overlap_frames) == (200, 50)
    assert "fixed chunking" in s.reason and f"W={r.window_frames}, O={r.overlap_frames}" in s.reason


def test_peer_sherpa_onnx_runs_the_same_files(test_zipformer_dir):
    pytest.importorskip("sherpa_onnx")
    r = bench.run_bench(
        _small(test_zipformer_dir, lengths_s=(1.0, 2.0), peer="sherpa-onnx", peer_seconds=2.0)
    )[0]
    p = r.peer
    assert r.peer_error is None and p is not None
    assert p.ours_rtf > 0 and p.peer_rtf > 0 and p.ratio == pytest.approx(p.ours_rtf / p.peer_rtf)
    assert p.threads == 1 and p.audio_seconds == pytest.approx(2.0)
    # same files, same greedy search: the same words from both runtimes
    assert p.texts_match and p.ours_words > 0


def test_peer_on_a_wctc_model_is_explained(wctc_dir):
    r = bench.run_bench(_small(wctc_dir, peer="sherpa-onnx", full_context=False))[0]
    assert r.peer is None and "zipformer models only" in r.peer_error


def test_accuracy_on_a_manifest(wctc_dir, tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32), 16000)
    manifest = tmp_path / "m.tsv"
    manifest.write_text("id\tpath\tduration_seconds\ttranscript\nu1\ta.wav\t1.0\thello world\n")
    r = bench.run_bench(_small(wctc_dir, data=str(manifest), full_context=False, lengths_s=(1.0, 2.0)))[0]
    a = r.accuracy
    assert a.utterances == 1 and a.audio_seconds == pytest.approx(1.0)
    assert a.wer >= 0 and a.cer >= 0 and a.rtf > 0


runner = CliRunner()


def test_cli_json_plot_and_tables(wctc_dir, tmp_path):
    out_json, out_png = tmp_path / "r.json", tmp_path / "lat.png"
    args = [
        "bench",
        "--model",
        str(wctc_dir),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--window",
        "100,200",
        "--overlap",
        "50",
        "--lengths",
        "1,3",
        "--windows-per-length",
        "2",
        "--realtime-seconds",
        "0",
        "--full-context-reps",
        "1",
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "sweep" in res.output and "(full " in res.output
    data = json.loads(out_json.read_text())
    assert [(d["window_frames"], d["overlap_frames"]) for d in data] == [(100, 50), (200, 50)]
    for d in data:
        assert d["hop_frames"] == d["window_frames"] - d["overlap_frames"]
        assert d["t_wait_ms"] == d["hop_frames"] * 10
        assert d["total_ms"]["p50"] >= d["t_wait_ms"] and d["total_ms"]["p95"] >= d["total_ms"]["p50"]
        assert d["device"] == "cpu" and isinstance(d["keeps_up"], bool)
        assert d["model_files"][0] == "encoder.onnx"  # the export wrote only the float file
        assert [p["seconds"] for p in d["per_length"]] == [1.0, 3.0]
        assert all(p["full_context_ms_p50"] > 0 for p in d["per_length"])
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_options_give_one_line(wctc_dir):
    res = runner.invoke(app, ["bench", "--model", str(wctc_dir), "--lengths", "10,abc"])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--lengths" in lines[0]
    assert "Traceback" not in res.output


def test_cli_cuda_is_measured_or_explained_in_one_line(wctc_dir, tmp_path):
    out_json = tmp_path / "d.json"
    args = [
        "bench",
        "--model",
        str(wctc_dir),
        "--device",
        "cpu,cuda",
        "--threads",
        "1",
        "--lengths",
        "1,2",
        "--windows-per-length",
        "2",
        "--realtime-seconds",
        "0",
        "--no-full-context",
        "--json",
        str(out_json),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = {d["device"]: d for d in json.loads(out_json.read_text())}
    assert data["cpu"]["status"] == "ok" and data["cpu"]["provider"] == "CPUExecutionProvider"
    if data["cuda"]["status"] == "ok":
        assert data["cuda"]["provider"] == "CUDAExecutionProvider"
    else:
        assert "CUDA" in data["cuda"]["reason"] and "\n" not in data["cuda"]["reason"]
        assert (data["cuda"]["window_frames"], data["cuda"]["overlap_frames"]) == (200, 50)
        only = runner.invoke(
            app, ["bench", "--model", str(wctc_dir), "--device", "cuda", "--realtime-seconds", "0"]
        )
        assert only.exit_code != 0 and "Traceback" not in only.output
        assert [ln for ln in only.output.splitlines() if ln.strip()][-1].startswith("error:")


def test_real_subprocess_run_writes_json(wctc_dir, tmp_path):
    out_json = tmp_path / "sub.json"
    args = [
        sys.executable,
        "-m",
        "streamcli",
        "bench",
        "--model",
        str(wctc_dir),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--lengths",
        "1,2",
        "--windows-per-length",
        "2",
        "--realtime-seconds",
        "0",
        "--no-full-context",
        "--json",
        str(out_json),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "T_proc per window" in proc.stdout and proc.stderr == ""
    (d,) = json.loads(out_json.read_text())
    assert d["status"] == "ok" and d["hop_frames"] == 150 and d["windows_measured"] > 0
