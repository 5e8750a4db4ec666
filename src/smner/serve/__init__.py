"""``smner serve``: an HTTP API and a web page that explain predictions with image heatmaps.

Imported on demand (it needs FastAPI); :func:`create_app` builds the whole server.
"""

from __future__ import annotations

from smner.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
