#!/usr/bin/env python3
"""Synthetic speech for training: TTS voices over a text corpus (see streamcli_tools.devtools.synth_speech).

The code lives in :mod:`streamcli_tools.devtools.synth_speech`; this is its command line.
"""

import sys

from streamcli_tools.devtools.synth_speech import main

if __name__ == "__main__":
    sys.exit(main())
