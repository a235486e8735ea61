"""``python -m cli``: the same as the ``unbroken`` command."""

from cli.main import main

main()
