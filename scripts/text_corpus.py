#!/usr/bin/env python3
"""The text corpus for synthetic speech (see streamcli.devtools.text_corpus).

The code lives in :mod:`streamcli.devtools.text_corpus`; this is its command line.
"""

import sys

from streamcli.devtools.text_corpus import main

if __name__ == "__main__":
    sys.exit(main())
