"""``python -m logmm …``: the ``logmm`` command line."""

from logmm.cli.main import main

if __name__ == "__main__":
    main()
