"""`layerwise serve [--host 127.0.0.1] [--port 8765]`: the web calculator and its JSON API."""
from __future__ import annotations

import typer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback by default)"),
        port: int = typer.Option(8765, "--port", help="TCP port (0: any free port)"),
    ):
        """A local web page that sizes a model as you change the workload (offline), and its JSON API."""
        from layerwise.report.console import err, out
        from layerwise.serve.server import make_server
        from layerwise.spec.errors import LayerwiseError

        if host not in LOOPBACK:
            err.print(f"[bold yellow]warning:[/] binding {host}: anyone who can reach this machine can use the "
                      f"server (it has no authentication)")
        try:
            server = make_server(host, port)
        except OSError as exc:
            raise LayerwiseError(f"--host {host} --port {port}: cannot bind ({exc.strerror or exc})") from None
        bound_host, bound_port = server.server_address[:2]
        out.print(f"layerwise serving on http://{bound_host}:{bound_port}/ (Ctrl-C stops)", highlight=False)
        try:
            server.serve_forever()
        finally:
            server.server_close()
