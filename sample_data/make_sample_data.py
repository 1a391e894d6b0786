"""Regenerate the files in this directory: ``python sample_data/make_sample_data.py``.

The generator lives in the package (``logmm.samples``) so that ``logmm sample-data DIR``
writes the same files anywhere.
"""

from pathlib import Path

from logmm.samples import main

if __name__ == "__main__":
    main(default_out=Path(__file__).resolve().parent)
