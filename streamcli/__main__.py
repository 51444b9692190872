"""``python -m streamcli``: the same CLI as the ``streamcli`` command."""

from streamcli.cli import main

main()
