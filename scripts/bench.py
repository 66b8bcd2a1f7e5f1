#!/usr/bin/env python3
"""Thin wrapper: the benchmark suite (JSON on stdout). See --help, or `lookalike-live bench`."""
import sys

from lookalike_live.bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
