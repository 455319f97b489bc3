"""`charrnn serve`: keep a model loaded behind an HTTP API and a playground page."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from charrnn.cli.group import cli
from charrnn.errors import Stopped, UserError
from charrnn.extras import install_command


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 makes the server reachable from other machines.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--max-length", type=click.IntRange(min=1), default=2000, show_default=True,
              help="The most tokens one request may generate per sample.")
@click.option("--max-samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="The most samples one request may draw (num_samples x best_of).")
@click.option("--max-beam", type=click.IntRange(min=1), default=16, show_default=True, help="The widest beam.")
@click.option("--max-body", type=click.IntRange(min=1024), default=64 * 1024, show_default=True,
              help="The largest request body, in bytes.")
def serve(run, host, port, max_length, max_samples, max_beam, max_body):
    """Serve a trained model over HTTP: a JSON API and a playground page at /.

    \b
    POST /v1/generate  {"prime": "ROMEO:", "length": 200, "temperature": 0.8, "seed": 1, "stream": true, ...}
    POST /v1/score     {"text": "...", "per_token": true}
    GET  /v1/model, GET /healthz

    \b
    Examples:
      charrnn serve runs/input                      # http://127.0.0.1:8000/
      charrnn serve runs/input --port 8080 --max-length 500
    """
    import socket

    try:
        import uvicorn

        from charrnn.serve.app import ServerLimits, create_app
    except ImportError as missing:
        raise UserError(f"charrnn serve needs the serve extra ({missing.name} is not installed): "
                        f"{install_command('serve')}") from None
    from charrnn.generate.generation import Limits
    from charrnn.runs.run import load_model

    model, params, vocab, meta = load_model(run)
    model.stepper(params, 1)  # a bidirectional model cannot generate: refuse it now, not per request
    limits = ServerLimits(Limits(length=max_length, samples=max_samples, beam=max_beam), body_bytes=max_body)
    app = create_app(model, params, vocab, meta, limits)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except socket.gaierror:
        raise UserError(f"--host {host}: not an address of this machine") from None
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    listener.listen(2048)  # connections wait in the queue from now on, before the server loop starts
    address = listener.getsockname()
    shown = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
    click.echo(f"serving {run} at http://{shown}:{address[1]}/ (Ctrl-C to stop)", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[listener])  # a stop signal shuts down gracefully, then is raised again
    except Stopped as stop:
        stop.settle()
        click.echo(f"server stopped ({stop})", err=True)
        sys.exit(stop.exit_code)
