"""`charrnn plot`: curves from metrics.jsonl, drawn without a display."""

import json
import sys

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.extras import install_command
from charrnn.runs.plot import curves


def write_run(path, records):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


RECORDS = [
    {"kind": "log", "step": 1, "tokens": 100, "wall_time": 1.0, "train_loss": 4.0, "val_loss": None},
    {"kind": "log", "step": 2, "tokens": 200, "wall_time": 2.0, "train_loss": 3.0, "val_loss": None},
    {"kind": "eval", "step": 2, "tokens": 200, "wall_time": 2.5, "train_loss": 3.0, "val_loss": 3.2},
]


def test_curves_separate_train_and_val_points():
    series = curves(RECORDS)
    assert series["train"] == ([100, 200], [1.0, 2.0], [4.0, 3.0])
    assert series["val"] == ([200], [2.5], [3.2])


def test_plot_writes_an_image_of_several_runs(tmp_path):
    pytest.importorskip("matplotlib")
    a, b = write_run(tmp_path / "a", RECORDS), write_run(tmp_path / "b", RECORDS)
    result = CliRunner().invoke(cli, ["plot", str(a), str(b), "-o", str(tmp_path / "curve.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    result = CliRunner().invoke(cli, ["plot", str(write_run(tmp_path / "a", RECORDS))])
    assert result.exit_code == 1 and install_command("plot") in result.output


def test_a_directory_without_metrics_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["plot", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no metrics.jsonl" in result.output


def test_every_command_has_help():
    for name, command in cli.commands.items():
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and command.help and len(result.output) > 200, name


def test_the_record_of_a_schedule_fitted_to_max_time_is_no_point_and_no_damage(tmp_path):
    pytest.importorskip("matplotlib")
    fitted = {"kind": "horizon", "step": 2, "horizon": 40, "step_seconds": 0.5, "max_time": "20s"}
    run = write_run(tmp_path / "a", [*RECORDS[:2], fitted, RECORDS[2]])
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / "curve.png")])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and (tmp_path / "curve.png").stat().st_size > 0


def test_damaged_records_are_skipped_and_counted_in_one_warning(tmp_path):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "a", RECORDS)
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b'null\n{"kind": "log", "step": 3}\n\xff\xfe\n{"kind": "eval", "tokens": 300, "wall_time": 3,'
                     b' "val_loss": "NaN"}\n{"kind": "log", "tokens": 300, "wall_time": 3.0, "train_loss": 2.5}\n')
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / "curve.png")])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"warning: {run / 'metrics.jsonl'}: skipped 4 damaged records (lines 4, 5, 6, 7)\n"
    assert (tmp_path / "curve.png").stat().st_size > 0
