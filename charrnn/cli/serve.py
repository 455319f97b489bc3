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
              help="Address to listen on; 0.0.0.0 makes the server reachable from other machines (give --api-key).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--api-key", envvar="CHARRNN_API_KEY", default=None, metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on every route but /healthz and the page (also from "
                   "CHARRNN_API_KEY).")
@click.option("--model-name", default=None, help="The model's id in the OpenAI API.  [default: the run's name]")
@click.option("--max-length", type=click.IntRange(min=1), default=2000, show_default=True,
              help="The most tokens one request may generate per sample.")
@click.option("--max-samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="The most samples one request may draw (num_samples x best_of).")
@click.option("--max-beam", type=click.IntRange(min=1), default=16, show_default=True, help="The widest beam.")
@click.option("--max-body", type=click.IntRange(min=1024), default=64 * 1024, show_default=True,
              help="The largest request body, in bytes.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests in flight at once; more get 429.")
@click.option("--max-batch", type=click.IntRange(min=0), default=256, show_default=True,
              help="Streams stepped together in one batch; the requests beyond wait their turn (0: no batching, "
                   "each request a batch of its own).")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a client has to send a request's head, and again its body; slower ones are closed (408 "
                   "for a body).")
@click.option("--max-connections", type=click.IntRange(min=8), default=None,
              help="Connections open at once; more are closed as they arrive.  [default: 1000, or what the "
                   "file-descriptor limit leaves]")
def serve(run, host, port, api_key, model_name, max_length, max_samples, max_beam, max_body, max_concurrent,
          max_batch, request_timeout, max_connections):
    """Serve a trained model over HTTP: a JSON API, OpenAI's completions API, and a playground page at /.

    \b
    POST /v1/generate     {"prime": "ROMEO:", "length": 200, "temperature": 0.8, "seed": 1, "stream": true, ...}
    POST /v1/score        {"text": "...", "per_token": true}
    POST /v1/completions  OpenAI's: {"model": "RUN-NAME", "prompt": "ROMEO:", "max_tokens": 100, ...}
    GET  /v1/models, GET /v1/model, GET /healthz

    \b
    Examples:
      charrnn serve runs/input                      # http://127.0.0.1:8000/
      charrnn serve runs/input --port 8080 --max-length 500
      CHARRNN_API_KEY=secret charrnn serve runs/input --host 0.0.0.0
    """
    import ipaddress
    import socket

    try:
        import uvicorn

        from charrnn.serve.app import ServerLimits, create_app
        from charrnn.serve.guard import guarded_protocol, quiet_logs
    except ImportError as missing:
        raise UserError(f"charrnn serve needs the serve extra ({missing.name} is not installed): "
                        f"{install_command('serve')}") from None
    from charrnn.generate.generation import Limits
    from charrnn.runs.ensemble import MANIFEST, is_ensemble
    from charrnn.runs.run import find_checkpoint, load_models

    if api_key is not None and not api_key.strip():
        raise click.BadParameter("the key is empty", param_hint="--api-key")
    model, params, vocab, meta = load_models(run)
    made = Path(run) / MANIFEST if is_ensemble(run) else find_checkpoint(run)
    model.stepper(params, 1)  # a bidirectional model cannot generate: refuse it now, not per request
    limits = ServerLimits(Limits(length=max_length, samples=max_samples, beam=max_beam), body_bytes=max_body,
                          max_concurrent=max_concurrent, batch_streams=max_batch, body_seconds=request_timeout)
    model_id = model_name or (Path(run).name if Path(run).is_dir() else Path(run).stem)
    app = create_app(model, params, vocab, meta, limits, model_id=model_id, api_key=api_key,
                     created=int(made.stat().st_mtime))
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
    if api_key is None and not ipaddress.ip_address(address[0]).is_loopback:
        click.echo(f"warning: {shown} is reachable from other machines and no --api-key is set: anyone who can "
                   f"reach it can use the model", err=True)
    click.echo(f"serving {run} as model {model_id!r} at http://{shown}:{address[1]}/ (Ctrl-C to stop)", err=True)
    quiet_logs()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_SECONDS,
                            timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            http=guarded_protocol(request_timeout, max_connections or connection_cap()))
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listener])  # a stop signal shuts down gracefully, then is raised again
    except Stopped as stop:
        stop.settle()
        click.echo(f"server stopped ({stop})", err=True)
        sys.exit(stop.exit_code)


KEEP_ALIVE_SECONDS = 5  # an idle kept-alive connection is closed after this
GRACE_SECONDS = 3  # a stop signal: requests in flight get this long, then the server stops regardless


def connection_cap() -> int:
    """1,000 connections, or fewer where the file-descriptor limit is lower (a hundred kept back
    for the server's own files and the model's threads)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(1000, soft - 100)) if soft != resource.RLIM_INFINITY else 1000
