"""The data plane: a pure ASGI proxy. It never imports Django (see tests/test_boundaries.py)."""

__version__ = "0.1.0"
