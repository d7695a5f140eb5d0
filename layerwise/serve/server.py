"""`layerwise serve`: the page and the JSON API on the standard library's ThreadingHTTPServer.

Why the standard library: the API is a handful of POST endpoints whose work is pure-Python
arithmetic of a few milliseconds, the page is static files, and the server must run offline on any
machine that runs the CLI. ThreadingHTTPServer does that with no new dependency (Starlette +
uvicorn would add two, for routing and async we do not need); a thread per request keeps a slow
plan search from blocking the page's other requests.

Safety: loopback by default (the caller warns otherwise); bodies over 1 MB are refused before they
are read; static files come from a fixed table of package resources, so no path from a client is
ever opened; every bad request is an HTTP 400 with {"error", "field"}, and an unexpected failure is
a 500 with a JSON error, so one request never stops the server.
"""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from layerwise.serve.api import ENDPOINTS, MAX_BODY_BYTES, Api, BadRequest

# URL path -> (resource file under layerwise/serve/static, content type). Nothing else is served.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "/chart.umd.min.js": ("chart.umd.min.js", "text/javascript; charset=utf-8"),
    "/LICENSE.chart.js.md": ("LICENSE.chart.js.md", "text/markdown; charset=utf-8"),
}


def static_bytes(name: str) -> bytes:
    return resources.files("layerwise.serve").joinpath("static", name).read_bytes()


def _catalogue() -> dict:
    """GET /api/catalogue: what the page's pickers offer (presets, GPUs, workload flags)."""
    from layerwise.cost.hardware import CATALOG
    from layerwise.presets import PRESETS

    return {"presets": sorted(PRESETS),
            "gpus": [{"name": g.name, "memory_bytes": g.memory_bytes, "dtypes": list(g.dtypes)}
                     for g in CATALOG.values()]}


def _flags(api: Api) -> dict:
    """Each endpoint's keys with their default and help (from the CLI's own options); `workload`
    marks the workload flags of commands/_workload.py (the page's form controls)."""
    from layerwise.commands._workload import WORKLOAD_OPTIONS

    out = {}
    for ep in ENDPOINTS:
        out[ep] = {name: {"default": _plain(p.default), "help": p.help or "", "flag": p.opts[0],
                          "type": "bool" if p.is_flag else getattr(p.type, "name", "text"),
                          "workload": p.name in WORKLOAD_OPTIONS}
                   for name, p in api.fields(ep).items()}
    return out


def _plain(value):
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


class Handler(BaseHTTPRequestHandler):
    api: Api  # set by make_server
    server_version = "layerwise"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # quiet: the CLI prints one line at start; requests are not logged

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path == "/api/catalogue":
            return self._json(200, _catalogue())
        if path == "/api/flags":
            return self._json(200, _flags(self.api))
        if path in STATIC:
            name, ctype = STATIC[path]
            return self._send(200, static_bytes(name), ctype)
        self._json(404, {"error": f"no such page {path[:80]!r}", "field": "path"})

    def do_POST(self):  # noqa: N802
        path = urlsplit(self.path).path
        if not path.startswith("/api/"):
            return self._json(404, {"error": f"no such endpoint {path[:80]!r}", "field": "path"})
        try:
            body = self._body()
            self._json(200, self.api.handle(path[len("/api/"):], body))
        except BadRequest as err:
            self._json(400, err.to_json())
        except Exception as err:  # a bug: answer it, keep serving
            self._json(500, {"error": f"internal error: {type(err).__name__}: {err}", "field": None})

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise BadRequest("body", "body: a Content-Length header is required") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise BadRequest("body", f"body: {length:,} bytes is over the {MAX_BODY_BYTES:,}-byte limit")
        return self.rfile.read(length)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the listen backlog: a burst of connections waits instead of being refused


def make_server(host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    handler = type("LayerwiseHandler", (Handler,), {"api": Api()})
    return Server((host, port), handler)
