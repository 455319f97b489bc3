"""Configuration: defaults <- YAML <- --set <- flags, validated once at the door."""

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import Config, parse_duration, resolve
from charrnn.errors import UserError


def test_sources_apply_in_order_defaults_yaml_set_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  cell: gru\n  hidden_size: 32\ntrain:\n  lr: 0.01\n  max_steps: 5\n")
    config = resolve(path, ["train.lr=0.02", "hidden_size=48"], {"train.max_steps": 7})
    assert (config.model.cell, config.model.hidden_size, config.train.lr, config.train.max_steps) == ("gru", 48, 0.02, 7)
    assert config.train.batch_size == Config().train.batch_size


@pytest.mark.parametrize("assignment, message", [
    ("train.lrr=0.1", "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ("model.hiden_size=3", "did you mean 'model.hidden_size'?"),
    ("train.lr=fast", "train.lr must be a number, not 'fast'"),
    ("model.num_layers=1.5", "model.num_layers must be an integer"),
    ("model.cell=transformer", "model.cell must be one of rnn, lstm, gru"),
    ("train.batch_size=0", "train.batch_size must be positive"),
    ("model.dropout=1.0", "model.dropout must be in [0, 1)"),
    ("train.max_time=soon", "train.max_time must look like 90s, 10m or 1.5h"),
    ("train.betas=[0.9]", "train.betas must be two numbers"),
    ("nonsense", "--set takes key=value"),
])
def test_every_bad_setting_is_rejected_naming_the_key(assignment, message):
    with pytest.raises(UserError) as error:
        resolve(assignments=[assignment])
    assert message in str(error.value)


def test_unknown_yaml_key_and_section_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  layers: 3\n")
    with pytest.raises(UserError, match="unknown config key 'model.layers'; did you mean 'model.num_layers'"):
        resolve(path)
    path.write_text("optim:\n  lr: 3\n")
    with pytest.raises(UserError, match="unknown config section 'optim'"):
        resolve(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        resolve(path)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    assert parse_duration(45) == 45


def test_print_config_shows_the_resolved_yaml_and_round_trips(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--print-config", "--cell", "gru", "--max-time", "10m",
                                      "--set", "train.lr=0.005"])
    assert result.exit_code == 0, result.output
    assert "cell: gru" in result.stdout and "lr: 0.005" in result.stdout and "max_time: 10m" in result.stdout
    path = tmp_path / "printed.yaml"
    path.write_text(result.stdout)
    assert resolve(path).to_dict() == resolve(assignments=["train.lr=0.005", "model.cell=gru",
                                                           "train.max_time=10m"]).to_dict()


def test_cli_reports_a_bad_key_in_one_line_before_any_work(tmp_path):
    result = CliRunner().invoke(cli, ["train", "missing.txt", "--set", "train.lrr=1", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert "did you mean 'train.lr'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_every_shipped_config_resolves_and_validates():
    from charrnn.config import config_file, packaged_configs

    assert {"demo", "tiny", "shakespeare"} <= set(packaged_configs())
    for name in packaged_configs():
        config = resolve(config_file(name))
        assert (config.train.max_steps or 0) > 0 or config.max_seconds > 0, name  # a count, or a fitted time
    demo = resolve(config_file("demo"))
    assert (demo.model.cell, demo.model.hidden_size, demo.train.lr_schedule) == ("gru", 256, "cosine")
