"""``python -m benchmarks [name ...]``: run the benchmarks (see ``run_all.py``)."""

import sys

from benchmarks.run_all import main

main(sys.argv[1:])
