"""``smner serve``: an HTTP API and a web page that explain predictions with image heatmaps.

Imported on demand (it needs FastAPI); :func:`create_app` builds the whole server.
"""

from __future__ import annotations

from smner.serve.app import create_app
from smner.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
