#!/usr/bin/env python3
"""Merge the sections of a later `scripts/bench.py --out` run into an earlier full run's JSON, so the
README's Results can be rewritten (`scripts/bench.py --from-json MERGED --readme README.md`) without
re-running every section. The later sections keep their own start time (`section_started`)."""

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base", type=Path, help="the earlier full run's JSON (rewritten in place unless --out)")
    p.add_argument("later", type=Path, help="a later run's JSON whose sections replace the base's")
    p.add_argument("--out", type=Path, help="write the merged JSON here instead")
    args = p.parse_args()
    base, later = json.loads(args.base.read_text()), json.loads(args.later.read_text())
    if base.get("machine", {}).get("cpus") != later.get("machine", {}).get("cpus"):
        sys.exit("the two runs are from machines with different core counts: run the full suite instead")
    for name, sec in later["sections"].items():
        base["sections"][name] = sec
        base.setdefault("section_started", {})[name] = later["started"]
    (args.out or args.base).write_text(json.dumps(base, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
