"""``cupy.lib`` of the CPU stand-in."""
from . import stride_tricks  # noqa: F401
