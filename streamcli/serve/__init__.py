"""``streamcli serve``: many live streams on one port, batched into one encoder call per tick.

- :mod:`.app`: the Starlette app on uvicorn, its gates (origin, token, capacity) and life cycle;
- :mod:`.scheduler`: the worker thread that owns every stream (bounded queues, one window per stream
  per tick, finals from the batched second pass);
- :mod:`.connection`: one WebSocket's outbox and timeouts; :mod:`.context`: what handlers see of the server;
- protocols: :mod:`.vosk` (vosk-server's), :mod:`.realtime` (OpenAI Realtime transcription),
  :mod:`.openai_api` (OpenAI REST transcription and models);
- :mod:`.metrics`: Prometheus metrics.
"""

from streamcli.serve.app import FINALS_UTILIZATION, Server, ServerError
from streamcli.serve.config import DEFAULT_PORT, ServeConfig, read_token
from streamcli.serve.context import Busy, ServerContext
from streamcli.serve.vosk import merge_segments, partial_message, result_message

__all__ = [
    "Busy",
    "ServerContext",
    "DEFAULT_PORT",
    "FINALS_UTILIZATION",
    "ServeConfig",
    "Server",
    "ServerError",
    "merge_segments",
    "partial_message",
    "read_token",
    "result_message",
]
