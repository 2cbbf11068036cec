"""`python -m detector` runs the `detect` command."""

from .cli import main

main()
