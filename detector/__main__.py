"""`python -m detector` runs the `detect` command."""

from .cli import main

if __name__ == "__main__":  # not on a plain import (a tool walking the package's modules)
    main()
