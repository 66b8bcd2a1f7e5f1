#!/usr/bin/env python3
"""Thin wrapper: cut the faces of a video into photos (people absent from a gallery, for
`eval identify --distractors`). See --help, or lookalike_live/video_faces.py."""
import sys

from lookalike_live.video_faces import main

if __name__ == "__main__":
    sys.exit(main())
