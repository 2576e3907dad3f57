"""The planner's page: one HTML file, one script and one style sheet, all shipped with the project
(no CDN, no map tiles: the map is an SVG of the city's H3 cells drawn from `/v1/location/map`).

The page calls the same `/v1/location/recommend` endpoint as any app, with the key the planner
enters once (kept in the browser's sessionStorage)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).parent
# only these files are served: a name from the URL never becomes a path
ASSETS = {"index.html": "text/html; charset=utf-8", "planner.js": "text/javascript; charset=utf-8",
          "planner.css": "text/css; charset=utf-8"}
# nothing but this server: a page that tried to load anything from elsewhere would be blocked
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                      "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@cache
def asset(name: str) -> tuple[bytes, str]:
    """(bytes, media type) of one of the page's files. KeyError for any other name."""
    media_type = ASSETS[name]
    return (HERE / name).read_bytes(), media_type
