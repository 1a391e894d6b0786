"""logmm's command line (``logmm …``): a thin Click layer over the engines in :mod:`logmm`."""
