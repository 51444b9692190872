#!/usr/bin/env python3
"""Writes a random-weight streaming zipformer transducer (sherpa-onnx's version-1 interface).

The code lives in :mod:`streamcli_tools.devtools.zipformer_maker`; this is its command line.
"""

import sys

from streamcli_tools.devtools.zipformer_maker import main

if __name__ == "__main__":
    sys.exit(main())
