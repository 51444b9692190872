"""streamcli: streaming speech-to-text with ONNX streaming encoders."""

from streamcli.results import Result, Segment, Token, Word

__all__ = ["Result", "Segment", "Token", "Word"]
__version__ = "0.1.0"
