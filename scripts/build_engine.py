#!/usr/bin/env python3
"""Thin wrapper: same as `lookalike-live models build-engine ...` (see --help)."""
import sys

from lookalike_live.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", "build-engine", *sys.argv[1:]]))
