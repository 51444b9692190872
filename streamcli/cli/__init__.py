"""The ``streamcli`` command line (Typer): thin commands over the library; see :mod:`streamcli.cli.root`."""

from streamcli.cli.root import app, main

__all__ = ["app", "main"]
