#!/usr/bin/env python3
"""The text corpus for synthetic speech (see streamcli_tools.devtools.text_corpus).

The code lives in :mod:`streamcli_tools.devtools.text_corpus`; this is its command line.
"""

import sys

from streamcli_tools.devtools.text_corpus import main

if __name__ == "__main__":
    sys.exit(main())
