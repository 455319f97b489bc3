"""The bad-input matrix: for every command, each class of user mistake ends with exactly one line on
stderr, a non-zero exit, and the working directory exactly as it was (nothing created, nothing lost).

Run in-process with click's CliRunner inside a workspace of prepared bad files; the faults that need
a real process (permissions, full disks, signals, kill -9, concurrency) are in test_faults.py.
"""

import os

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.extras import install_command
from conftest import SHAKESPEARE_LIKE, assert_one_line_failure, snapshot

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nmodel: {cell: *c}\n"


@pytest.fixture
def workspace(tmp_path, monkeypatch, trained_run, trained_ensemble):
    """A directory of bad inputs, made the working directory."""
    (tmp_path / "corpus.txt").write_text(SHAKESPEARE_LIKE)
    (tmp_path / "tiny.txt").write_text("ab")
    (tmp_path / "small.txt").write_text(SHAKESPEARE_LIKE[:400])
    (tmp_path / "binary.bin").write_bytes(b"text\0\1\2")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "one.txt").write_text("R")
    (tmp_path / "unknown.txt").write_text("zzzz")
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "textless").mkdir()
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "alias.yaml").write_text(ALIAS_BOMB)
    (tmp_path / "latin1.yaml").write_bytes(b"model:\n  cell: caf\xe9\n")
    (tmp_path / "binary.yaml").write_bytes(b"\0\1\2\3")
    (tmp_path / "list.yaml").write_text("- model\n- train\n")
    (tmp_path / "broken.yaml").write_text("model: [\n")
    (tmp_path / "huge.yaml").write_text("# " + "x" * (1 << 20) + "\n")
    (tmp_path / "badsection.yaml").write_text("modle:\n  cell: gru\n")
    (tmp_path / "words.txt").write_text(" ".join(f"w{i}" for i in range(5000)) * 2)
    prepared = CliRunner().invoke(cli, ["prepare", str(tmp_path / "words.txt"), "--level", "word",
                                        "--out", str(tmp_path / "words"), "--quiet"])
    assert prepared.exit_code == 0, prepared.output
    (tmp_path / "noise.npz").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (tmp_path / "nometrics").mkdir()
    (tmp_path / "badmetrics").mkdir()
    (tmp_path / "badmetrics" / "metrics.jsonl").write_bytes(b"\xff\xfe{not json\n")
    (tmp_path / "norecords").mkdir()
    (tmp_path / "norecords" / "metrics.jsonl").write_text("")
    (tmp_path / "run").symlink_to(trained_run, target_is_directory=True)
    (tmp_path / "ensemble").symlink_to(trained_ensemble, target_is_directory=True)
    (tmp_path / "badensemble").mkdir()
    (tmp_path / "badensemble" / "ensemble.json").write_text('{"members": ["member-1", "member-1"]}')
    (tmp_path / "halfensemble").mkdir()
    (tmp_path / "halfensemble" / "ensemble.json").write_text('{"members": ["member-1", "member-2"]}')
    (tmp_path / "halfensemble" / "member-1").symlink_to(trained_ensemble / "member-1", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


TRAIN = ["train", "corpus.txt", "--out", "r", "--quiet", "--hidden-size", "8", "--max-steps", "2"]
CASES = {
    # prepare
    "prepare missing file": (["prepare", "missing.txt"], "no such file"),
    "prepare folder without text": (["prepare", "textless"], "holds no text files"),
    "prepare fifo": (["prepare", "pipe"], "FIFO"),
    "prepare binary": (["prepare", "binary.bin"], "NUL"),
    "prepare invalid utf-8": (["prepare", "latin1.txt"], "not valid utf-8"),
    "prepare empty": (["prepare", "empty.txt"], "empty"),
    "prepare too small to split": (["prepare", "tiny.txt"], "split would be empty"),
    "prepare out is a file": (["prepare", "corpus.txt", "--out", "afile"], "is a regular file, not a directory"),
    "prepare val-frac nan": (["prepare", "corpus.txt", "--val-frac", "nan"], "--val-frac"),
    "prepare fractions over 1": (["prepare", "corpus.txt", "--val-frac", "0.6", "--test-frac", "0.6"], "sum to less"),
    "prepare unknown encoding": (["prepare", "corpus.txt", "--encoding", "klingon"], "unknown text encoding"),
    "prepare max-vocab 1": (["prepare", "corpus.txt", "--max-vocab", "1"], "--max-vocab"),
    "prepare min-count 0": (["prepare", "corpus.txt", "--min-count", "0"], "--min-count"),
    "prepare unknown option": (["prepare", "corpus.txt", "--bogus"], "no such option"),
    # train: what it is given
    "train without source": (["train"], "give SOURCE"),
    "train members 0": ([*TRAIN, "--set", "train.members=0"], "train.members must be positive"),
    "train members 17": ([*TRAIN, "--set", "train.members=17"], "train.members must be at most 16"),
    "train members not a number": ([*TRAIN, "--set", "train.members=two"], "train.members"),
    "train members fine-tuning": ([*TRAIN, "--set", "train.members=2", "--init-from", "run"],
                                  "train.init_from fine-tunes one network"),
    "train member settings without members": ([*TRAIN, "--set", "train.member_settings=[{train.lr: 0.01}]"],
                                              "set train.members to 2 or more"),
    "train member settings for more members": ([*TRAIN, "--set", "train.members=2", "--set",
                                                "train.member_settings=[{}, {}, {}]"], "3 entries for 2 members"),
    "train member settings not a mapping": ([*TRAIN, "--set", "train.members=2", "--set",
                                             "train.member_settings=[0.01]"], "entry 1 must map keys to values"),
    "train member settings change the shape": ([*TRAIN, "--set", "train.members=2", "--set",
                                                "train.member_settings=[{model.hidden_size: 8}]"],
                                               "which every member shares"),
    "train member settings unknown key": ([*TRAIN, "--set", "train.members=2", "--set",
                                           "train.member_settings=[{}, {train.lrate: 0.01}]"],
                                          "entry 2: unknown config key"),
    "train member settings one key twice": ([*TRAIN, "--set", "train.members=2", "--set",
                                             "train.member_settings=[{}, {lr: 0.01, train.lr: 0.005}]"],
                                            "entry 2 sets train.lr twice (as lr and train.lr)"),
    "train member settings dropout 1.2": ([*TRAIN, "--set", "train.members=2", "--set",
                                           "train.member_settings=[{model.dropout: 1.2}]"],
                                          "entry 1: model.dropout must be in [0, 1)"),
    "train member settings take all the time": ([*TRAIN, "--max-time", "10m", "--set", "train.members=3", "--set",
                                                 "train.member_settings=[{train.max_time: 5m}, {train.max_time: 5m}]"],
                                                "leaving none for the members without one"),
    "train member settings take more time": ([*TRAIN, "--max-time", "10m", "--set", "train.members=2", "--set",
                                              "train.member_settings=[{train.max_time: 8m}, {train.max_time: 8m}]"],
                                             "more than the ensemble's train.max_time"),
    "train fine-tuning an ensemble": ([*TRAIN, "--init-from", "ensemble"], "is an ensemble of 2 networks"),
    "eval an ensemble with a damaged manifest": (["eval", "badensemble", "--split", "val"], "not what charrnn writes"),
    "eval an ensemble missing a member": (["eval", "halfensemble", "--split", "val"], "has no checkpoint yet"),
    "sample an ensemble missing a member": (["sample", "halfensemble"], "has no checkpoint yet"),
    "export an ensemble": (["export", "ensemble", "-f", "onnx", "-o", "model.onnx"], "export takes one"),
    "train resume and force": (["train", "corpus.txt", "--resume", "--force"], "give one of them"),
    "train resume nothing": (["train", "corpus.txt", "--out", "r", "--resume"], "no checkpoint at"),
    "train out is a file": (["train", "corpus.txt", "--out", "afile"], "is a regular file, not a directory"),
    "train fifo source": (["train", "pipe", "--out", "r"], "FIFO"),
    "train corpus smaller than a batch": (["train", "small.txt", "--out", "r"], "too small for batch_size"),
    "train one-hot over a huge vocabulary": (["train", "words", "--out", "r"], "model.encoding=embedding"),
    # train: config files
    "config missing": ([*TRAIN, "-c", "missing.yaml"], "not found"),
    "config unknown name": ([*TRAIN, "-c", "nosuchconfig"], "neither a file nor a packaged config"),
    "config not utf-8": ([*TRAIN, "-c", "latin1.yaml"], "not UTF-8"),
    "config binary": ([*TRAIN, "-c", "binary.yaml"], "NUL bytes"),
    "config alias bomb": ([*TRAIN, "-c", "alias.yaml"], "aliases"),
    "config over 1 MiB": ([*TRAIN, "-c", "huge.yaml"], "larger than"),
    "config a list": ([*TRAIN, "-c", "list.yaml"], "must hold a mapping"),
    "config invalid yaml": ([*TRAIN, "-c", "broken.yaml"], "not valid YAML"),
    "config a directory": ([*TRAIN, "-c", "textless"], "is a directory"),
    "config misspelled section": ([*TRAIN, "-c", "badsection.yaml"], "did you mean 'model'"),
    # train: values
    "learning_rate suggests lr": ([*TRAIN, "--set", "train.learning_rate=1"], "did you mean 'train.lr'"),
    "misspelled section in --set": ([*TRAIN, "--set", "modle.cell=gru"], "did you mean 'model.cell'"),
    "lr nan": ([*TRAIN, "--lr", "nan"], "train.lr must be a finite number"),
    "lr inf": ([*TRAIN, "--set", "train.lr=.inf"], "train.lr must be a finite number"),
    "eps nan": ([*TRAIN, "--set", "train.eps=.nan"], "train.eps must be a finite number"),
    "clip_norm nan": ([*TRAIN, "--set", "train.clip_norm=.nan"], "train.clip_norm must be a finite"),
    "momentum 5": ([*TRAIN, "--set", "train.momentum=5"], "train.momentum must be in [0, 1)"),
    "negative decay_rate": ([*TRAIN, "--set", "train.decay_rate=-0.5"], "train.decay_rate must be in (0, 1]"),
    "negative seed": ([*TRAIN, "--set", "train.seed=-1"], "train.seed must not be negative"),
    "string lr": ([*TRAIN, "--set", "train.lr=fast"], "train.lr must be a number"),
    "unknown step products": ([*TRAIN, "--set", "train.step_products=fast"],
                              "train.step_products must be one of auto, batch_major, gate_major, packed"),
    "bad max_time": ([*TRAIN, "--max-time", "soon"], "max_time must look like"),
    "no stopping rule": (["train", "corpus.txt", "--out", "r", "--set", "train.max_steps=null"], "all empty"),
    "bidirectional": ([*TRAIN, "--set", "model.bidirectional=true"], "bidirectional"),
    "dropout 1": ([*TRAIN, "--set", "model.dropout=1"], "model.dropout must be in [0, 1)"),
    "patience 0": ([*TRAIN, "--patience", "0"], "train.patience must be positive"),
    "weight drop 1.2": ([*TRAIN, "--set", "model.weight_drop=1.2"], "model.weight_drop must be in [0, 1)"),
    "locked dropout -0.1": ([*TRAIN, "--set", "model.locked_dropout=-0.1"], "model.locked_dropout must be in [0, 1)"),
    "output dropout nan": ([*TRAIN, "--set", "model.output_dropout=.nan"], "must be a finite number"),
    "input dropout on one-hot input": ([*TRAIN, "--set", "model.input_dropout=0.2"], "model.embedding_dropout drops"),
    "negative activation penalty": ([*TRAIN, "--set", "train.activation_penalty=-1"],
                                    "train.activation_penalty must not be negative"),
    "unknown average": ([*TRAIN, "--set", "train.average=swa"], "train.average must be one of none, ema, tail"),
    "average decay 1": ([*TRAIN, "--set", "train.average=ema", "--set", "train.average_decay=1"],
                        "train.average_decay must be in (0, 1)"),
    "a paper's name for a key": ([*TRAIN, "--set", "model.dropouth=0.2"], "did you mean 'model.locked_dropout'"),
    "retime with print-config": (["train", "--print-config", "--retime"], "--retime"),
    # train: sizes are refused from an estimate, before allocating
    "huge hidden_size": ([*TRAIN, "--hidden-size", "10000000"], "needs about"),
    "huge num_layers": ([*TRAIN, "--layers", "1000000000"], "needs about"),
    "huge batch_size and seq_len": (["train", "corpus.txt", "--out", "r", "--batch-size", "2",
                                     "--seq-len", "4000000000000"], "needs about"),
    # sample
    "sample no run": (["sample", "missing-run"], "no such run directory"),
    "sample folder without checkpoint": (["sample", "textless"], "holds no checkpoint"),
    "sample random bytes as checkpoint": (["sample", "noise.npz"], "not a valid charrnn checkpoint"),
    "sample fifo as checkpoint": (["sample", "pipe"], "not a regular file"),
    "sample negative seed": (["sample", "run", "--seed", "-1"], "--seed"),
    "sample temperature nan": (["sample", "run", "--temperature", "nan"], "--temperature"),
    "sample temperature inf": (["sample", "run", "--temperature", "inf"], "--temperature"),
    "sample negative temperature": (["sample", "run", "--temperature", "-1"], "--temperature"),
    "sample top-p nan": (["sample", "run", "--top-p", "nan"], "--top-p"),
    "sample top-k 0": (["sample", "run", "--top-k", "0"], "--top-k"),
    "sample length 0": (["sample", "run", "--length", "0"], "--length"),
    "sample num-samples 0": (["sample", "run", "--num-samples", "0"], "--num-samples"),
    "sample huge output": (["sample", "run", "--length", "10000000000", "--num-samples", "1000000"], "needs about"),
    "sample unseen prime": (["sample", "run", "--prime", "xyz\u00e9"], "never saw"),
    "sample prime-file not utf-8": (["sample", "run", "--prime-file", "latin1.txt"], "not UTF-8"),
    "sample prime-file binary": (["sample", "run", "--prime-file", "binary.bin"], "NUL"),
    "sample prime and prime-file": (["sample", "run", "--prime", "a", "--prime-file", "corpus.txt"], "not both"),
    "sample beam 0": (["sample", "run", "--beam", "0"], "--beam"),
    "sample beam with samples": (["sample", "run", "--beam", "2", "--num-samples", "2"], "one continuation"),
    "sample best-of 0": (["sample", "run", "--best-of", "0"], "--best-of"),
    "sample empty stop string": (["sample", "run", "--stop", ""], "--stop"),
    "sample interactive as json": (["sample", "run", "--interactive", "--json"], "--interactive"),
    "sample interactive best-of": (["sample", "run", "--interactive", "--best-of", "2"], "--interactive"),
    # text that is not valid Unicode, as Linux hands invalid UTF-8 in arguments to Python (surrogateescape)
    "sample prime with an invalid byte": (["sample", "run", "--prime", "The \udcff"], "--prime is not valid UTF-8 text (byte 4)"),
    "sample prime with a lone surrogate": (["sample", "run", "--prime", "a\ud800"], "--prime is not valid UTF-8 text"),
    "sample stop with an invalid byte": (["sample", "run", "--stop", "x\udcfe"], "--stop is not valid UTF-8 text (byte 1)"),
    # eval
    "eval nothing given": (["eval", "run"], "either TEXT"),
    "eval text and split": (["eval", "run", "corpus.txt", "--split", "val"], "either TEXT"),
    "eval empty file": (["eval", "run", "empty.txt"], "nothing to score"),
    "eval one character": (["eval", "run", "one.txt"], "nothing to score"),
    "eval only unknown characters": (["eval", "run", "unknown.txt"], "nothing to score"),
    "eval only unknown, as json": (["eval", "run", "unknown.txt", "--json"], "nothing to score"),
    "eval strict with unknowns": (["eval", "run", "unknown.txt", "--strict"], "not in the vocabulary"),
    "eval missing text": (["eval", "run", "missing.txt"], "no such file"),
    "eval fifo": (["eval", "run", "pipe"], "FIFO"),
    "eval not utf-8": (["eval", "run", "latin1.txt"], "not valid utf-8"),
    "eval chunk 0": (["eval", "run", "corpus.txt", "--chunk", "0"], "--chunk"),
    "eval html into a missing folder": (["eval", "run", "corpus.txt", "--html", "nofolder/page.html"],
                                        "the folder nofolder does not exist"),
    "eval one stream as pieces": (["eval", "run", "corpus.txt", "--streams", "1"], "--streams"),
    "eval negative warm-up": (["eval", "run", "corpus.txt", "--streams", "4", "--warmup", "-1"], "--warmup"),
    "eval exact and streams": (["eval", "run", "corpus.txt", "--exact", "--streams", "4"], "--exact"),
    "eval dynamic and streams": (["eval", "run", "corpus.txt", "--dynamic", "--streams", "4"], "--dynamic"),
    "eval ngram order 0": (["eval", "run", "corpus.txt", "--ngram", "0"], "--ngram must be an order from 1 to 16"),
    "eval ngram order too long": (["eval", "run", "corpus.txt", "--ngram", "99"], "--ngram must be an order"),
    "eval ngram not a number": (["eval", "run", "corpus.txt", "--ngram", "6.5"], "--ngram"),
    "eval ngram on an empty file": (["eval", "run", "empty.txt", "--ngram", "6"], "nothing to score"),
    "eval ngram html into a missing folder": (["eval", "run", "corpus.txt", "--ngram", "3", "--html",
                                               "nofolder/page.html"], "the folder nofolder does not exist"),
    # eval: settings that mean nothing together are refused, not ignored
    "eval dynamic-lr without dynamic": (["eval", "run", "corpus.txt", "--dynamic-lr", "0.1"], "add --dynamic"),
    "eval dynamic-method and seq without dynamic": (["eval", "run", "corpus.txt", "--dynamic-method", "sgd",
                                                     "--dynamic-seq", "50"], "--dynamic-method, --dynamic-seq tune"),
    "eval warm-up with exact": (["eval", "run", "corpus.txt", "--exact", "--warmup", "0"], "--warmup applies to pieces"),
    "eval no-bfloat16 with dynamic": (["eval", "run", "corpus.txt", "--dynamic", "--no-bfloat16"], "--no-bfloat16"),
    "eval encoding with split": (["eval", "run", "--split", "val", "--encoding", "latin-1"], "--encoding applies"),
    "eval force without html": (["eval", "run", "corpus.txt", "--force"], "--force replaces the --html file"),
    "eval dynamic that diverges": (["eval", "run", "corpus.txt", "--dynamic", "--dynamic-lr", "1e6", "-q"],
                                   "dynamic evaluation diverged"),
    "eval dynamic sgd that diverges": (["eval", "run", "corpus.txt", "--dynamic", "--dynamic-method", "sgd",
                                        "--dynamic-lr", "1e30", "-q"], "lower --dynamic-lr"),
    # serve
    "serve no run": (["serve", "missing-run"], "no such run directory"),
    "serve an ensemble missing a member": (["serve", "halfensemble"], "has no checkpoint yet"),
    "serve random bytes as checkpoint": (["serve", "noise.npz"], "not a valid charrnn checkpoint"),
    "serve port out of range": (["serve", "run", "--port", "70000"], "--port"),
    "serve unknown host": (["serve", "run", "--host", "no.such.host.invalid"], "--host"),
    "serve max-length 0": (["serve", "run", "--max-length", "0"], "--max-length"),
    # plot
    "plot run without metrics": (["plot", "nometrics", "-o", "x.png"], "no metrics.jsonl"),
    "plot damaged metrics": (["plot", "badmetrics", "-o", "x.png"], "all 1 of its records are damaged"),
    "plot no records yet": (["plot", "norecords", "-o", "x.png"], "holds no records yet"),
    "plot unknown format": (["plot", "run", "-o", "curve.xyz"], "cannot write .xyz"),
    "plot missing run": (["plot", "missing-run"], "does not exist"),
    # inspect (the trained run is a 2 x 24 LSTM)
    "inspect nothing given": (["inspect", "run"], "either TEXT"),
    "inspect an ensemble": (["inspect", "ensemble", "--split", "val"], "inspect takes one"),
    "inspect text and split": (["inspect", "run", "corpus.txt", "--split", "val"], "either TEXT"),
    "inspect empty file": (["inspect", "run", "empty.txt"], "nothing to inspect"),
    "inspect one character": (["inspect", "run", "one.txt"], "nothing to inspect"),
    "inspect only unknown characters": (["inspect", "run", "unknown.txt"], "4 unknown"),
    "inspect strict with unknowns": (["inspect", "run", "unknown.txt", "--strict"], "not in the vocabulary"),
    "inspect not utf-8": (["inspect", "run", "latin1.txt"], "not valid utf-8"),
    "inspect fifo": (["inspect", "run", "pipe"], "FIFO"),
    "inspect missing run": (["inspect", "missing-run", "corpus.txt"], "no such run directory"),
    "inspect regex that does not compile": (["inspect", "run", "corpus.txt", "--feature", "open=[ab"],
                                            "does not compile"),
    "inspect feature without a name": (["inspect", "run", "corpus.txt", "--feature", "[ab]"], "NAME=REGEX"),
    "inspect unknown layer": (["inspect", "run", "corpus.txt", "--html", "p.html", "--unit", "3:h:0"],
                              "there is no layer 3"),
    "inspect unknown kind": (["inspect", "run", "corpus.txt", "--html", "p.html", "--unit", "1:z:0"],
                             "'z' is not a kind of a LSTM's values"),
    "inspect unknown unit": (["inspect", "run", "corpus.txt", "--html", "p.html", "--unit", "1:h:24"],
                             "there is no unit 24: units are 0 to 23"),
    "inspect unit that is not a number": (["inspect", "run", "corpus.txt", "--html", "p.html", "--unit", "1:h:x"],
                                          "LAYER:KIND:UNIT"),
    "inspect page kind of another cell": (["inspect", "run", "corpus.txt", "--html", "p.html", "--page-kinds", "h,r"],
                                          "r is not a kind"),
    "inspect unit of a kind not on the page": (["inspect", "run", "corpus.txt", "--html", "p.html", "--unit", "1:f:0"],
                                               "the page holds h, c, not f; add it to --page-kinds"),
    "inspect unit without a page": (["inspect", "run", "corpus.txt", "--unit", "1:h:0"], "give --html"),
    "inspect force without an output": (["inspect", "run", "corpus.txt", "--force"], "give --html, --states or --plot"),
    "inspect max-chars 1": (["inspect", "run", "corpus.txt", "--max-chars", "1"], "--max-chars"),
    "inspect page of an unknown format": (["inspect", "run", "corpus.txt", "--plot", "p.xyz", "-q"],
                                          "cannot write .xyz"),
    # the group
    "unknown command": (["trian"], "no such command"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_ends_in_one_line_and_leaves_nothing_behind(workspace, case):
    argv, fragment = CASES[case]
    if case in ("plot unknown format", "inspect page of an unknown format"):
        pytest.importorskip("matplotlib")
    before = snapshot(workspace)
    result = CliRunner().invoke(cli, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_one_line_failure(result.exit_code, result.stderr, fragment or "")
    assert snapshot(workspace) == before


def test_values_a_user_means_as_numbers_are_numbers(workspace):
    result = CliRunner().invoke(cli, ["train", "--print-config", "--set", "train.lr=1e6", "--set", "train.eps=1E-9"])
    assert result.exit_code == 0 and "lr: 1000000.0" in result.stdout and "eps: 1.0e-09" in result.stdout


def test_an_extreme_temperature_still_samples_text(workspace):
    for temperature in ("1e-310", "1e300"):
        result = CliRunner().invoke(cli, ["sample", "run", "--temperature", temperature, "--length", "40",
                                          "--seed", "1"])
        assert result.exit_code == 0 and len(result.stdout.strip()) >= 20, result.stdout


def test_every_command_has_help_naming_its_options():
    for name, command in cli.commands.items():
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout and "--help" in result.stdout, name
    assert "tiny" in CliRunner().invoke(cli, ["train", "--help"]).stdout


def test_packed_step_products_without_mkl_end_in_one_line_that_says_how_to_install_it(workspace, monkeypatch):
    from charrnn.nn import products

    monkeypatch.setattr(products, "mkl_products", lambda: None)
    before = snapshot(workspace)
    result = CliRunner().invoke(cli, [*TRAIN, "--set", "train.step_products=packed"])
    assert_one_line_failure(result.exit_code, result.stderr, install_command("mkl"))
    assert snapshot(workspace) == before
