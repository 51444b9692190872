"""Endpoint rules and the energy speech detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
from paths import TEST_WAVS

from streamcli.endpoint import EndpointConfig, EndpointDetector, SpeechDetector, endpoint_rule

RATE = 16000


def noise(seconds: float, level_dbfs: float, seed: int = 0) -> np.ndarray:
    rms = 10 ** (level_dbfs / 20)
    return (np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * rms).astype(np.float32)


def speechlike(seconds: float, level_dbfs: float = -20.0) -> np.ndarray:
    """Syllable-like bursts: a 150 Hz buzz amplitude-modulated at 4 Hz, with short dips."""
    t = np.arange(round(seconds * RATE)) / RATE
    envelope = 0.55 + 0.45 * np.sin(2 * math.pi * 4 * t)
    x = np.sin(2 * math.pi * 150 * t) * envelope
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (level_dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rule1_min_trailing_silence_s", 0.0),
        ("rule2_min_trailing_silence_s", -1.0),
        ("rule3_min_utterance_length_s", float("nan")),
        ("rule3_min_utterance_length_s", "20"),
        ("silence_from", "vad"),
        ("speech_margin_db", 0.0),
        ("speech_min_level_dbfs", 3.0),
    ],
)
def test_config_is_validated_early(field, value):
    with pytest.raises(ValueError, match=field):
        EndpointConfig(**{field: value})


def test_defaults_are_the_sherpa_rules():
    cfg = EndpointConfig()
    assert (cfg.rule1_min_trailing_silence_s, cfg.rule2_min_trailing_silence_s) == (2.4, 1.2)
    assert cfg.rule3_min_utterance_length_s == 20.0 and cfg.enabled


def test_rules_fire_at_their_thresholds():
    cfg = EndpointConfig()
    # rule 1 needs nothing decoded
    assert endpoint_rule(cfg, utterance_length_s=2.39, trailing_silence_s=2.39, has_text=False) is None
    assert endpoint_rule(cfg, utterance_length_s=2.4, trailing_silence_s=2.4, has_text=False) == 1
    # 1.2 s without text is not enough; with text it is rule 2
    assert endpoint_rule(cfg, utterance_length_s=5, trailing_silence_s=1.2, has_text=False) is None
    assert endpoint_rule(cfg, utterance_length_s=5, trailing_silence_s=1.19, has_text=True) is None
    assert endpoint_rule(cfg, utterance_length_s=5, trailing_silence_s=1.2, has_text=True) == 2
    # rule 3 whatever the silence
    assert endpoint_rule(cfg, utterance_length_s=19.99, trailing_silence_s=0, has_text=True) is None
    assert endpoint_rule(cfg, utterance_length_s=20.0, trailing_silence_s=0, has_text=True) == 3
    off = EndpointConfig(enabled=False)
    assert endpoint_rule(off, utterance_length_s=100, trailing_silence_s=100, has_text=True) is None


def test_speech_detector_follows_speech_and_silence_over_a_noise_floor():
    det = SpeechDetector(RATE)
    det.accept_waveform(noise(3.0, -50))  # background only
    assert det.last_speech_end_s is None
    assert det.trailing_silence_s() == pytest.approx(3.0)
    det.accept_waveform(noise(1.0, -50, 1) + speechlike(1.0))
    assert det.last_speech_end_s == pytest.approx(4.0, abs=0.03)
    det.accept_waveform(noise(1.5, -50, 2))
    # hangover of 0.2 s after the last speech frame
    assert det.trailing_silence_s() == pytest.approx(1.5 - 0.2, abs=0.05)
    assert det.noise_floor_dbfs < -48


def test_speech_detector_adapts_to_a_louder_background():
    det = SpeechDetector(RATE)
    det.accept_waveform(noise(2.0, -60))
    det.accept_waveform(noise(8.0, -35, 3))  # fan switched on: speech at first, background after 5 s
    assert det.trailing_silence_s() >= 2.5
    det.accept_waveform(speechlike(0.5, -12))
    assert det.trailing_silence_s() < 0.25


def test_block_size_does_not_change_the_decisions():
    x = np.concatenate([noise(1.0, -50), speechlike(1.3), noise(2.0, -50, 5), speechlike(0.4)])
    whole = SpeechDetector(RATE)
    whole.accept_waveform(x)
    pieces = SpeechDetector(RATE)
    for i in range(0, x.size, 333):
        pieces.accept_waveform(x[i : i + 333])
    assert pieces.now_s == whole.now_s
    assert pieces.last_speech_end_s == whole.last_speech_end_s
    assert pieces.speech_frames == whole.speech_frames


def test_real_speech_is_detected_and_its_pauses_measured():
    import soundfile as sf

    x, rate = sf.read(TEST_WAVS / "0.wav", dtype="float32")
    det = SpeechDetector(rate)
    det.accept_waveform(x)
    duration_s = x.size / rate
    assert det.speech_frames * det.frame_s > 0.5 * duration_s
    det.accept_waveform(np.zeros(2 * rate, np.float32))
    # speech lasts until close to the end of the file; the appended 2 s are silence
    assert duration_s - 1.0 < det.last_speech_end_s <= duration_s + 0.01
    assert 2.0 - 0.01 <= det.trailing_silence_s() <= 3.0


def test_detector_combines_decoder_and_audio_silence():
    det = EndpointDetector(EndpointConfig(silence_from="either"), sample_rate=RATE)
    det.accept_waveform(np.concatenate([speechlike(2.0), np.zeros(RATE * 2, np.float32)]))
    # The decoder saw a token at 3.8 s (a noise token), the audio has been silent since ~2.2 s.
    assert det.is_endpoint(utterance_start_s=0, last_token_s=3.8, decoded_s=4.0, has_text=True)
    assert det.last_rule == 2
    both = EndpointDetector(EndpointConfig(silence_from="both"), sample_rate=RATE)
    both.accept_waveform(np.concatenate([speechlike(2.0), np.zeros(RATE * 2, np.float32)]))
    assert not both.is_endpoint(utterance_start_s=0, last_token_s=3.8, decoded_s=4.0, has_text=True)
    assert both.is_endpoint(utterance_start_s=0, last_token_s=2.1, decoded_s=4.0, has_text=True)
    decoder = EndpointDetector(EndpointConfig(silence_from="decoder"), sample_rate=RATE)
    decoder.accept_waveform(np.zeros(RATE * 10, np.float32))  # ignored
    assert decoder.speech.now_s == 0
    assert not decoder.is_endpoint(utterance_start_s=0, last_token_s=None, decoded_s=2.3, has_text=False)
    assert decoder.is_endpoint(utterance_start_s=0, last_token_s=None, decoded_s=2.4, has_text=False)
    assert decoder.last_rule == 1


def test_audio_silence_is_counted_only_up_to_the_decoded_time():
    det = EndpointDetector(EndpointConfig(silence_from="audio"), sample_rate=RATE)
    det.accept_waveform(np.concatenate([speechlike(1.0), np.zeros(RATE * 3, np.float32)]))
    # the audio is 4 s ahead but only 1.5 s were decoded: 0.3 s of silence so far
    silence = det.trailing_silence_s(utterance_start_s=0, last_token_s=None, decoded_s=1.5)
    assert silence == pytest.approx(0.3, abs=0.05)
    assert not det.is_endpoint(utterance_start_s=0, last_token_s=None, decoded_s=1.5, has_text=True)
    assert det.is_endpoint(utterance_start_s=0, last_token_s=None, decoded_s=2.5, has_text=True)
    # after a reset at 2.5 s the new utterance's silence counts from its start
    silence = det.trailing_silence_s(utterance_start_s=2.5, last_token_s=None, decoded_s=4.0)
    assert silence == pytest.approx(1.5, abs=0.02)
    assert not det.is_endpoint(utterance_start_s=2.5, last_token_s=None, decoded_s=4.0, has_text=False)


def test_rule3_and_disabled():
    det = EndpointDetector(EndpointConfig(rule3_min_utterance_length_s=5.0), sample_rate=RATE)
    det.accept_waveform(speechlike(6.0))
    assert not det.is_endpoint(utterance_start_s=0, last_token_s=4.9, decoded_s=4.95, has_text=True)
    assert det.is_endpoint(utterance_start_s=0, last_token_s=4.9, decoded_s=5.0, has_text=True)
    assert det.last_rule == 3
    off = EndpointDetector(EndpointConfig(enabled=False), sample_rate=RATE)
    off.accept_waveform(np.zeros(RATE * 30, np.float32))
    assert not off.is_endpoint(utterance_start_s=0, last_token_s=None, decoded_s=30, has_text=False)
    assert off.last_rule is None


def test_speech_detector_matches_a_frame_by_frame_reference_for_any_block_cut():
    """The vectorized sliding minimum decides every frame as the plain per-frame definition does."""
    rng = np.random.default_rng(3)
    rate = 16000
    # Speech-like bursts over a background that changes level half-way (the floor has to follow).
    audio = rng.standard_normal(rate * 14).astype(np.float32) * 0.002
    audio[rate * 7 :] *= 8
    for start_s in (1.0, 3.5, 8.0, 11.0):
        a, b = int(start_s * rate), int((start_s + 0.8) * rate)
        audio[a:b] += rng.standard_normal(b - a).astype(np.float32) * 0.2
    det = SpeechDetector(rate)
    frame = det.frame_samples
    n = audio.size // frame
    levels = 20 * np.log10(np.maximum(np.sqrt(np.mean(
        audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)), 1e-5))
    window = round(5.0 / det.frame_s)
    floors = np.array([levels[max(0, i - window + 1) : i + 1].min() for i in range(n)])
    is_speech = (levels >= det.min_level_dbfs) & (levels >= floors + det.margin_db)
    for cut in (1, 160, 1601, 48000, audio.size):
        d = SpeechDetector(rate)
        for i in range(0, audio.size, cut):
            d.accept_waveform(audio[i : i + cut])
        assert d.speech_frames == int(is_speech.sum()) > 0
        assert d.noise_floor_dbfs == pytest.approx(floors[-1])
        last = int(np.flatnonzero(is_speech)[-1])
        assert d.last_speech_end_s == pytest.approx(min(n, last + 1 + d._hangover_frames) * d.frame_s)
