#!/usr/bin/env python3
"""Thin wrapper: same as `lookalike-live models fetch ...` (see --help)."""
import sys

from lookalike_live.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", "fetch", *sys.argv[1:]]))
