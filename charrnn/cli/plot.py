"""`charrnn plot`: loss curves of runs."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.cli.group import cli


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=Path("curve.png"),
              show_default=True, help="Image file to write (PNG, SVG, PDF by suffix).")
@click.option("--title", default=None, help="Figure title.  [default: the run names]")
@click.option("--force", is_flag=True, help="Replace the image file if it exists (never a file of a run).")
def plot(runs, output, title, force):
    """Draw train and val loss against tokens seen and wall time, one colour per run (each
    member of an ensemble is a run).

    \b
    Examples:
      charrnn plot runs/shakespeare -o curve.png
      charrnn plot runs/lstm runs/gru -o compare.png     # runs overlaid
    """
    from charrnn.files.outputs import OutputFile
    from charrnn.runs.ensemble import is_ensemble, member_directories
    from charrnn.runs.plot import plot_runs

    destination = OutputFile(output, "--output", force).check()
    runs = [member for run in runs for member in (member_directories(run) if is_ensemble(run) else [run])]
    plot_runs(runs, destination, title, warn=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {output}")
