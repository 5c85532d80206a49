"""``python -m medfm`` is the same as the ``medfm`` console script."""

from medfm.cli import main

if __name__ == "__main__":
    main()
