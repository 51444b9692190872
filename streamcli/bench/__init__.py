"""Latency benchmark of streaming encoders: how long until text appears, does it keep up, what it costs.

The latency model of windowed streaming attention: audio becomes 10 ms feature frames; each encoder
call consumes hop = W - O new frames (the O overlap frames enter only through the cached keys/values),
so a frame waits up to hop x 10 ms (on average hop x 5 ms) for its window to fill and then one window's
processing time T_proc. With a cache T_proc stays the same however long the stream runs; a full-context
encoder that re-encodes everything so far at each hop gets slower as the stream grows. This module
measures both on real encoder calls:

- T_proc per window (features of the hop + encoder call + search + endpoint check, wall clock) over
  long streams, with separate streams advanced to each requested position (``lengths_s``) by real
  decoding, so the cache state at 600 s is the real one; the positions are then measured
  round-robin so machine noise hits every position alike;
- the full-context baseline: the same ONNX file called with all frames so far as ``x`` and empty
  (0-length) caches (windowed-CTC models only);
- K streams batched into one call (``Recognizer.decode_streams``), emission latency in a real-time
  paced run, WER/CER on a manifest, and the same zipformer files through sherpa-onnx (``peer``).

Everything here runs on onnxruntime; torch and matplotlib are never imported at module level.
"""

from streamcli.bench.accuracy import read_manifest
from streamcli.bench.audio import LoopedAudio, synthetic_speechlike
from streamcli.bench.config import BenchConfig, parse_devices, parse_float_list, parse_int_list
from streamcli.bench.measure import measure_full_context
from streamcli.bench.plot import plot_latency
from streamcli.bench.run import plan_configs, run_bench
from streamcli.bench.schema import ConfigResult, LengthPoint, Percentiles, write_json

__all__ = [
    "BenchConfig", "ConfigResult", "LengthPoint", "LoopedAudio", "Percentiles", "measure_full_context",
    "parse_devices", "parse_float_list", "parse_int_list", "plan_configs", "plot_latency", "read_manifest",
    "run_bench", "synthetic_speechlike", "write_json",
]
