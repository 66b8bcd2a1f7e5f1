#!/usr/bin/env python3
"""Thin wrapper: same as `lookalike-live index build ...` (see --help)."""
import sys

from lookalike_live.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", "build", *sys.argv[1:]]))
