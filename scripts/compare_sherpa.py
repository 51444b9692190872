#!/usr/bin/env python3
"""streamcli vs sherpa-onnx on the same zipformer, files and threads: parity and speed in one run.

The code lives in :mod:`streamcli_tools.devtools.sherpa_parity`; this is its command line.
"""

import sys

from streamcli_tools.devtools.sherpa_parity import main

if __name__ == "__main__":
    sys.exit(main())
