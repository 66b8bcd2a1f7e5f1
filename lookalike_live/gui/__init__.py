"""The PyQt6 desktop app (``lookalike-live app``): the live lookalike overlay.

The only package that imports Qt. ``bridge`` moves engine results into Qt (a QTimer pulls
``Engine.latest()``; engine construction and model loading run on a worker thread), ``widgets``
holds the video view, banners, match panel and settings dialog, ``main_window`` assembles them,
``cli`` registers the ``app`` subcommand (Qt imported lazily there). ``session`` and ``recorder``
are Qt-free helpers (engine loading, photo matching, MP4 recording).
"""
