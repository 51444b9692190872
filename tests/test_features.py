"""Online fbank: sherpa-onnx settings, streaming == one shot, frame counts, flat memory."""

from __future__ import annotations

import numpy as np
import pytest

from streamcli.features import OnlineFbank, compute_features, fbank_options


def test_options_are_sherpa_onnx_defaults():
    opts = fbank_options()
    assert opts.frame_opts.samp_freq == 16000
    assert opts.frame_opts.frame_shift_ms == 10
    assert opts.frame_opts.frame_length_ms == 25
    assert opts.frame_opts.dither == 0
    assert opts.frame_opts.snip_edges is False
    assert opts.frame_opts.window_type == "povey"
    assert opts.mel_opts.num_bins == 80
    assert opts.mel_opts.low_freq == 20
    assert opts.mel_opts.high_freq == -400


@pytest.mark.parametrize("num_samples", [1, 79, 80, 81, 159, 160, 161, 16000, 16081])
def test_frame_count_without_snip_edges(num_samples):
    # kaldi with snip_edges=False: frames depend only on the shift, rounding to the nearest frame
    fb = OnlineFbank()
    fb.accept_waveform(np.full(num_samples, 0.01, np.float32))
    before = fb.num_frames_ready
    fb.input_finished()
    assert fb.num_frames_ready == (num_samples + 80) // 160
    assert before <= fb.num_frames_ready


def test_streaming_blocks_equal_one_shot():
    rng = np.random.default_rng(1)
    samples = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    whole = compute_features(samples, "kaldi_fbank")
    fb = OnlineFbank()
    pos = 0
    while pos < samples.size:
        n = int(rng.integers(1, 3000))
        fb.accept_waveform(samples[pos : pos + n])
        pos += n
    fb.input_finished()
    np.testing.assert_array_equal(fb.get_frames(0, fb.num_frames_ready), whole)
    assert whole.shape == (300, 80)
    assert whole.dtype == np.float32


def test_sine_peaks_in_the_right_mel_bin():
    t = np.arange(16000) / 16000
    low = compute_features((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), "kaldi_fbank")
    high = compute_features((0.5 * np.sin(2 * np.pi * 4000 * t)).astype(np.float32), "kaldi_fbank")
    assert low[50].argmax() < high[50].argmax()
    # samples are taken in [-1, 1] (not scaled by 32768, which would add 2*ln(32768) = 20.8)
    assert 0.0 < low[50].max() < 10.0
    silence = compute_features(np.zeros(16000, np.float32), "kaldi_fbank")
    np.testing.assert_allclose(silence, np.log(np.finfo(np.float32).eps), rtol=1e-5)


def test_discard_keeps_memory_flat_and_indices_absolute():
    rng = np.random.default_rng(2)
    samples = (rng.standard_normal(16000 * 4) * 0.1).astype(np.float32)
    whole = compute_features(samples, "kaldi_fbank")
    fb = OnlineFbank()
    held = []
    for start in range(0, samples.size, 1600):
        fb.accept_waveform(samples[start : start + 1600])
        fb.discard_before(fb.num_frames_ready - 5)
        held.append(fb.num_frames_ready - fb.first_kept_frame)
    assert max(held) <= 5
    last = fb.num_frames_ready
    np.testing.assert_array_equal(fb.get_frames(last - 5, 5), whole[last - 5 : last])
    with pytest.raises(IndexError):
        fb.get_frames(0, 1)


def test_accept_after_finish_is_an_error():
    fb = OnlineFbank()
    fb.input_finished()
    with pytest.raises(ValueError):
        fb.accept_waveform(np.zeros(10, np.float32))


@pytest.mark.parametrize("length", [16000 * 12, 1153, 399, 281, 50])
def test_whisper_mel_matches_kaldi_native_fbank_for_any_block_cut(length):
    """The vectorized Whisper mel frames: the same frames at the same moments as kaldi-native-fbank's
    OnlineWhisperFbank (its framing, reflection and tail), values within float32 FFT rounding."""
    import kaldi_native_fbank as knf
    from paths import TEST_WAVS

    from streamcli.audio import read_audio
    from streamcli.features import feature_extractor

    wavs = sorted(TEST_WAVS.glob("*.wav")) if TEST_WAVS else []
    if not wavs:
        pytest.skip("needs ../shared/models/*/test_wavs")
    speech = np.concatenate([read_audio(w, target_rate=16000)[0] for w in wavs])[:length]
    assert speech.size == length
    rng = np.random.default_rng(length)
    ref = knf.OnlineWhisperFbank(knf.WhisperFeatureOptions())
    ours = feature_extractor("whisper_log10_mel")
    pos = 0
    while pos < speech.size:
        block = speech[pos : pos + int(rng.integers(1, 4000))]
        pos += block.size
        ref.accept_waveform(16000, block)
        ours.accept_waveform(block)
        assert ours.num_frames_ready == ref.num_frames_ready  # same frames ready at every moment
    ref.input_finished()
    ours.input_finished()
    n = ref.num_frames_ready
    assert ours.num_frames_ready == n == (length + 80) // 160
    if n == 0:
        return
    expected = np.log10(np.maximum(np.stack([ref.get_frame(i) for i in range(n)]), 1e-10))
    got = ours.get_frames(0, n)
    assert got.shape == (n, 80) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 0.03
    assert np.percentile(np.abs(got - expected), 99) < 1e-3
