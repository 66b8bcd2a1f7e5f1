"""Benchmarks behind ``scripts/bench.py`` / ``lookalike-live bench``: one module per area,
each exposing ``run(...) -> dict`` of JSON-serialisable figures."""
