"""Fine-tuning (`charrnn train NEW --init-from RUN`): a grown vocabulary, weights carried over, a fresh
optimizer, the source recorded, and everything that would change the model refused."""

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocabulary
from charrnn.nn.model import RNNLM
from charrnn.runs.run import load_model, read_checkpoint
from charrnn.training.finetune import grow
from conftest import SHAKESPEARE_LIKE, assert_one_line_failure

NEW_TEXT = "def romeo(x):\n    return x * 42  # zebra\n\n" * 60
TINY = ["--quiet", "--batch-size", "4", "--seq-len", "16", "--set", "train.eval_every=4"]


def train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_a_grown_vocabulary_keeps_every_old_id_and_appends_the_new_tokens():
    old = Vocabulary.from_counts(Counter("banana"), "char")
    grown = old.grown(Counter("cabbage!"))
    assert grown.tokens[: old.size] == old.tokens and grown.tokens[old.size:] == ("!", "c", "e", "g")
    assert grown.counts[grown.index["n"]] == 0 and grown.counts[grown.index["a"]] == 2


@pytest.mark.parametrize("encoding", ["onehot", "bow", "embedding"])
def test_grow_carries_trained_weights_over_and_starts_new_tokens_fresh(encoding):
    config = ModelConfig(cell="gru", hidden_size=6, num_layers=2, encoding=encoding, embedding_dim=5)
    trained = RNNLM(config, 7).init_params(np.random.default_rng(0))
    fresh = RNNLM(config, 10).init_params(np.random.default_rng(1))
    grown = grow(trained, fresh, old_vocab=7)
    for name, value in grown.items():
        old = trained[name]
        assert value.shape == fresh[name].shape
        assert np.array_equal(value[tuple(slice(0, n) for n in old.shape)], old), name
    assert np.array_equal(grown["head.weight"][7:], fresh["head.weight"][7:])
    assert np.all(grown["head.bias"][7:] == trained["head.bias"].min())
    if encoding == "embedding":
        assert np.array_equal(grown["embedding.weight"][7:], fresh["embedding.weight"][7:])
    else:
        assert np.array_equal(grown["rnn.weight_ih_l0"][:, 7:], fresh["rnn.weight_ih_l0"][:, 7:])


def test_fine_tuning_grows_the_vocabulary_encodes_the_text_with_it_and_records_the_source(tmp_path, trained_run):
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT)
    out = tmp_path / "ft"
    result = train(text, "--init-from", trained_run, "--out", out, "--max-steps", 3, "--lr", "1e-12", *TINY)
    assert result.exit_code == 0, result.output
    assert "fine-tuning from" in result.stderr and "new tokens" in result.stderr
    _, source_params, source_vocab, _ = load_model(trained_run / "best.npz")
    _, params, vocab, meta = load_model(out / "last.npz")
    assert vocab.tokens[: source_vocab.size] == source_vocab.tokens and set(NEW_TEXT) <= set(vocab.tokens)
    data = np.fromfile(out / "data" / "train.bin", dtype=meta_dtype(out))
    assert vocab.decode(data) == NEW_TEXT[: len(data)]
    for name, value in source_params.items():  # an lr of 1e-12 leaves the carried weights where they were
        np.testing.assert_allclose(params[name][tuple(slice(0, n) for n in value.shape)], value, atol=1e-6)
    config = yaml.safe_load((out / "config.yaml").read_text())["train"]
    summary = json.loads((out / "summary.json").read_text())["init_from"]
    assert config["init_from"] == summary["path"] == str((trained_run / "best.npz").resolve())
    assert len(config["init_from_sha256"]) == 64 and summary["sha256"] == config["init_from_sha256"]
    optimizer = read_checkpoint(out / "last.npz").optimizer
    assert int(optimizer["t"]) == 3  # a fresh Adam: three steps counted, not the source's


def meta_dtype(run):
    return json.loads((run / "data" / "meta.json").read_text())["dtype"]


def test_a_fine_tuning_run_resumes_exactly(tmp_path, trained_run):
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(text, "--init-from", trained_run, "--out", whole, "--max-steps", 8, *TINY).exit_code == 0
    assert train(text, "--init-from", trained_run, "--out", parts, "--max-steps", 4, *TINY).exit_code == 0
    assert train("--out", parts, "--resume", "--max-steps", 8, "--quiet").exit_code == 0
    a, b = read_checkpoint(whole / "last.npz").params, read_checkpoint(parts / "last.npz").params
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_what_would_change_the_model_or_the_source_is_refused(tmp_path, trained_run):
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT)
    other = tmp_path / "other.txt"
    other.write_text(SHAKESPEARE_LIKE.upper())
    assert CliRunner().invoke(cli, ["prepare", str(other), "--out", str(tmp_path / "prepared"), "-q"]).exit_code == 0
    cases = [(["--hidden-size", "64"], "leave out model.hidden_size"),
             (["--set", "model.cell=rnn"], "leave out model.cell"),
             (["--set", "train.init_from_sha256=" + "ab" * 32], "has changed since"),
             (["--resume"], "leave it out with --resume")]
    for extra, fragment in cases:
        result = train(text, "--init-from", trained_run, "--out", tmp_path / "ft", *TINY, *extra)
        assert_one_line_failure(result.exit_code, result.stderr, fragment)
    result = train(tmp_path / "prepared", "--init-from", trained_run, "--out", tmp_path / "ft", *TINY)
    assert_one_line_failure(result.exit_code, result.stderr, "give the text itself")
    result = train(text, "--init-from", tmp_path / "missing", "--out", tmp_path / "ft", *TINY)
    assert_one_line_failure(result.exit_code, result.stderr, "no such run directory")
    assert not (tmp_path / "ft").exists()


def test_runs_from_an_older_charrnn_whose_config_lacks_newer_keys_resume_and_fine_tune(tmp_path, trained_run):
    from charrnn.runs import checkpoint

    old = tmp_path / "old"
    old.mkdir()
    saved = read_checkpoint(trained_run / "last.npz")
    for key in ("pretrained_embeddings", "freeze_embeddings"):
        del saved.meta["config"]["model"][key]
    for key in ("diverge_ratio", "init_from", "init_from_sha256"):
        del saved.meta["config"]["train"][key]
    checkpoint.save(old / "last.npz", saved)
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT)
    resumed = train("--out", old, "--resume", "--max-steps", saved.meta["progress"]["step"] + 2, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    tuned = train(text, "--init-from", old / "last.npz", "--out", tmp_path / "ft", "--max-steps", 2, *TINY)
    assert tuned.exit_code == 0, tuned.output


def test_a_stopped_fine_tuning_run_resumes_with_the_command_it_printed_and_keeps_its_vocabulary(tmp_path, trained_run):
    import shlex
    import signal
    import subprocess
    import sys
    import time

    from conftest import charrnn, snapshot

    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT)
    out = tmp_path / "ft"
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(text), "--init-from", str(trained_run),
                                "--out", str(out), "--max-steps", "1000000", "--set", "train.checkpoint_every=1",
                                *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    printed = next(line for line in stderr.splitlines() if line.startswith("resume with: "))
    argv = shlex.split(printed.removeprefix("resume with: "))
    assert argv[:2] == ["charrnn", "train"] and argv[2] == str(text)
    vocabulary = (out / "data" / "vocab.json").read_text()

    text.write_text(NEW_TEXT + "Q!")  # a token the run has no place for: refused, the run as it was
    before = snapshot(out)
    result = charrnn(*argv[1:])
    assert_one_line_failure(result.returncode, result.stderr, "keeps its vocabulary")
    assert snapshot(out) == before and (out / "data" / "vocab.json").read_text() == vocabulary

    text.write_text(NEW_TEXT)
    step = read_checkpoint(out / "last.npz").meta["progress"]["step"]
    result = charrnn(*argv[1:], "--max-steps", step + 2)
    assert result.returncode == 0, result.stderr
    assert read_checkpoint(out / "last.npz").meta["progress"]["step"] == step + 2
    assert (out / "data" / "vocab.json").read_text() == vocabulary
    assert charrnn("train", "--out", out, "--resume", "--max-steps", step + 3).returncode == 0
