"""Prometheus metrics of one server (``GET /metrics``), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.streams_open = Gauge("streamcli_streams_open", "Streams open now (all protocols).", registry=r)
        self.streams_total = Counter(
            "streamcli_streams", "Streams accepted, by protocol.", ["protocol"], registry=r
        )
        self.refused_total = Counter(
            "streamcli_refused", "Connections or requests refused, by reason.", ["reason"], registry=r
        )
        self.audio_seconds_total = Counter(
            "streamcli_audio_seconds", "Audio accepted from clients (s).", registry=r
        )
        self.finals_queue = Gauge(
            "streamcli_finals_queue_depth", "Utterances waiting for the second pass.", registry=r
        )
        self.first_pass_seconds = Histogram(
            "streamcli_first_pass_batch_seconds",
            "Time of one batched first-pass window call (all streams ready in a tick).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.final_seconds = Histogram(
            "streamcli_final_latency_seconds",
            "Second pass: an utterance queued -> its final text ready.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.rtf = Gauge(
            "streamcli_first_pass_rtf",
            "First-pass compute per audio second, over the server's life.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
