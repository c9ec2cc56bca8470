"""``python -m excite`` (and ``torchrun -m excite``) runs the command-line tool."""

from excite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
