"""``python -m toolkit.precision``."""

from toolkit.precision.cli import main

if __name__ == "__main__":
    main()
