"""`charrnn export`: the model as a web page, ONNX or safetensors."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.cli.group import cli


@cli.command(name="export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "-f", "fmt", type=click.Choice(["html", "onnx", "safetensors"]), required=True,
              help="html: a self-contained page that generates text in the browser; onnx: a graph on ONNX's "
                   "RNN/LSTM/GRU operators (needs the onnx extra); safetensors: the parameters under PyTorch's "
                   "names (needs the safetensors extra).")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="File to write.  [default: RUN/model.<format>, or the checkpoint's name with that suffix]")
@click.option("--float16", is_flag=True, help="html: embed the weights as float16, half the size.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists (never a file of a run).")
def export_model(run, fmt, output, float16, force):
    """Write the model of RUN (a run directory's best.npz, else last.npz, or a checkpoint) for use elsewhere.

    \b
    Examples:
      charrnn export runs/input --format html            # open runs/input/model.html in a browser
      charrnn export runs/input --format onnx -o model.onnx
      charrnn export runs/input --format safetensors --force   # replace an earlier export
    """
    from charrnn.export import export

    written = export(run, fmt, output, float16, force)
    click.echo(f"wrote {written} ({written.stat().st_size:,} bytes)")
