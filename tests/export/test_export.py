"""`charrnn export`: every format is checked numerically against the NumPy model (the oracle).

- ONNX: onnxruntime's logits and final states equal NumPy's within 1e-5, for every cell,
  encoding and depth, from a non-zero starting state.
- HTML: the page's JavaScript, run under Node, gives NumPy's logits within 1e-4 over 200 steps
  for rnn (tanh, relu), lstm and gru x one-hot, bag-of-words, embedding x depth 1 to 3; the page
  itself generates text in headless Chromium.
- safetensors: the arrays and metadata load back with `safetensors.numpy.load_file`.
"""

import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import Config, ModelConfig
from charrnn.data.vocab import Vocabulary, tokenize
from charrnn.export import Bundle
from charrnn.export.web import model_json
from charrnn.extras import install_command
from charrnn.nn.model import RNNLM, State
from charrnn.runs import checkpoint
from charrnn.runs import run as runs
from charrnn.training.loop import Progress, TrainingState
from conftest import assert_one_line_failure

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
ENCODINGS = ["onehot", "bow", "embedding"]
VOCAB = Vocabulary.from_counts(Counter("the quick brown fox jumps over the lazy dog.\n"), "char")
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def bundle_of(cell, nonlinearity, encoding, layers, seed=0) -> Bundle:
    config = Config(model=ModelConfig(cell=cell, nonlinearity=nonlinearity, hidden_size=12, num_layers=layers,
                                      encoding=encoding, embedding_dim=7, bow_window=3))
    model = RNNLM(config.model, VOCAB.size)
    params = model.init_params(np.random.default_rng(seed))
    meta = {"config": config.to_dict(), "progress": asdict(Progress(step=3, tokens=96))}
    return Bundle(model, params, VOCAB, meta)


def combinations(depths):
    return [(cell, nl, enc, depth) for cell, nl in CELLS for enc in ENCODINGS for depth in depths]


def random_state(model: RNNLM, batch: int, rng) -> State:
    state = model.initial_state(batch)
    layers = [tuple(rng.uniform(-0.5, 0.5, s.shape).astype(s.dtype) for s in layer) for layer in state.layers]
    history = rng.integers(-1, VOCAB.size, state.history.shape)
    return State(layers, history)


# --- ONNX ---

@pytest.mark.parametrize("cell, nonlinearity, encoding, depth", combinations([1, 2]))
def test_onnxruntime_matches_numpy(cell, nonlinearity, encoding, depth):
    onnxruntime = pytest.importorskip("onnxruntime")
    from charrnn.export.onnx_graph import build

    bundle = bundle_of(cell, nonlinearity, encoding, depth)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB.size, (9, 3))
    state = random_state(bundle.model, 3, rng)
    logits, final, _ = bundle.model.forward(bundle.params, tokens, state)
    session = onnxruntime.InferenceSession(build(bundle).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"tokens": tokens.astype(np.int64)}
    for layer, values in enumerate(state.layers):
        feeds[f"h{layer}"] = values[0][None]
        if cell == "lstm":
            feeds[f"c{layer}"] = values[1][None]
    if encoding == "bow":
        feeds["history"] = state.history.astype(np.int64)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, feeds)))
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5, rtol=1e-5)
    for layer, values in enumerate(final.layers):
        np.testing.assert_allclose(outputs[f"h{layer}_out"][0], values[0], atol=1e-5)
        if cell == "lstm":
            np.testing.assert_allclose(outputs[f"c{layer}_out"][0], values[1], atol=1e-5)
    if encoding == "bow":
        assert np.array_equal(outputs["history_out"], final.history)


def test_onnx_steps_one_token_at_a_time_like_a_chunk():
    onnxruntime = pytest.importorskip("onnxruntime")
    from charrnn.export.onnx_graph import build

    bundle = bundle_of("gru", "tanh", "bow", 2)
    session = onnxruntime.InferenceSession(build(bundle).SerializeToString(), providers=["CPUExecutionProvider"])
    tokens = np.random.default_rng(2).integers(0, VOCAB.size, (6, 1))
    feeds = {"h0": np.zeros((1, 1, 12), np.float32), "h1": np.zeros((1, 1, 12), np.float32),
             "history": np.full((2, 1), -1, np.int64)}
    chunk = session.run(["logits"], {**feeds, "tokens": tokens})[0]
    stepped = []
    for t in range(6):
        out = dict(zip(["logits", "h0_out", "h1_out", "history_out"],
                       session.run(["logits", "h0_out", "h1_out", "history_out"], {**feeds, "tokens": tokens[t:t + 1]})))
        stepped.append(out["logits"][0])
        feeds = {"h0": out["h0_out"], "h1": out["h1_out"], "history": out["history_out"]}
    np.testing.assert_allclose(np.stack(stepped), chunk, atol=1e-6)


# --- the page's JavaScript, under Node ---

STEP_SCRIPT = """
const charrnn = require(process.argv[2]);
const cases = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
const out = cases.map(({ spec, tokens }) => {
  const model = new charrnn.Model(spec);
  const state = model.initialState();
  return tokens.map((t) => Array.from(model.step(state, t)));
});
process.stdout.write(JSON.stringify(out));
"""


def node_logits(tmp_path, cases):
    """[(Bundle, float16, tokens)] -> the JavaScript's logits per case (T, V)."""
    script, data = tmp_path / "step.js", tmp_path / "cases.json"
    script.write_text(STEP_SCRIPT)
    data.write_text(json.dumps([{"spec": json.loads(model_json(b, f16)), "tokens": t.tolist()} for b, f16, t in cases]))
    module = importlib.resources.files("charrnn.export") / "charrnn.js"
    result = subprocess.run([NODE, str(script), str(module), str(data)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [np.array(logits) for logits in json.loads(result.stdout)]


def numpy_logits(bundle, tokens, params=None):
    stepper = bundle.model.stepper(params or bundle.params, 1)
    return np.stack([stepper.step(np.array([t])).copy()[0] for t in tokens])


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_page_javascript_matches_numpy_over_200_steps_for_every_cell_encoding_and_depth(tmp_path):
    rng = np.random.default_rng(3)
    cases = [(bundle_of(*combo, seed=i), False, rng.integers(0, VOCAB.size, 200))
             for i, combo in enumerate(combinations([1, 2, 3]))]
    for (bundle, _, tokens), js in zip(cases, node_logits(tmp_path, cases)):
        expected = numpy_logits(bundle, tokens)
        assert np.abs(js - expected).max() < 1e-4, bundle.model.config


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_float16_weights_decode_to_the_float16_rounded_model(tmp_path):
    bundle = bundle_of("lstm", "tanh", "embedding", 2)
    tokens = np.random.default_rng(4).integers(0, VOCAB.size, 50)
    js = node_logits(tmp_path, [(bundle, True, tokens)])[0]
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in bundle.params.items()}
    assert np.abs(js - numpy_logits(bundle, tokens, rounded)).max() < 1e-4
    assert len(model_json(bundle, float16=True)) < 0.6 * len(model_json(bundle))


SAMPLE_SCRIPT = """
const charrnn = require(process.argv[2]);
const { spec, cases } = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
const model = new charrnn.Model(spec);
const texts = [];
(function next(i) {
  if (i === cases.length) return process.stdout.write(JSON.stringify(texts));
  let text = "";
  const settings = { ...cases[i], seed: BigInt(cases[i].seed) };
  charrnn.generate(model, settings, (token) => { text += token; }, () => { texts.push(text); next(i + 1); });
})(0);
"""

SAMPLED = [{"prime": "ROMEO:", "temperature": 0.8, "topK": 0, "topP": 1, "seed": "1", "length": 300},
           {"prime": "", "temperature": 1.0, "topK": 5, "topP": 1, "seed": "7", "length": 200},
           {"prime": "JULIET", "temperature": 1.0, "topK": 0, "topP": 0.9, "seed": "3", "length": 200},
           {"prime": "O", "temperature": 0.5, "topK": 3, "topP": 0.95, "seed": str(2 ** 40 + 3), "length": 200},
           {"prime": "But ", "temperature": 0, "topK": 0, "topP": 1, "seed": "9223372036854775807", "length": 100}]


def the_flags(case: dict) -> list[str]:
    flags = ["--seed", case["seed"], "--length", str(case["length"]), "--temperature", str(case["temperature"])]
    flags += ["--top-k", str(case["topK"])] if case["topK"] else []
    flags += ["--top-p", str(case["topP"])] if case["topP"] < 1 else []
    return flags + (["--prime", case["prime"]] if case["prime"] else [])


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_page_draws_what_charrnn_sample_draws_with_the_same_seed_and_settings(tmp_path, trained_run):
    """The page draws with NumPy's generator (SeedSequence, PCG64) and NumPy's sums, so a seed
    gives the CLI's text; only float rounding in the logits (JavaScript's float64 against BLAS's
    float32) could part them, when a draw lands within about 1e-6 of a boundary."""
    from charrnn.export import Bundle
    from charrnn.runs.run import load_model

    bundle = Bundle(*load_model(trained_run))
    script, data = tmp_path / "sample.js", tmp_path / "cases.json"
    script.write_text(SAMPLE_SCRIPT)
    data.write_text(json.dumps({"spec": json.loads(model_json(bundle)), "cases": SAMPLED}))
    module = importlib.resources.files("charrnn.export") / "charrnn.js"
    result = subprocess.run([NODE, str(script), str(module), str(data)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for case, page in zip(SAMPLED, json.loads(result.stdout)):
        cli_result = CliRunner().invoke(cli, ["sample", str(trained_run), "--json", *the_flags(case)])
        assert cli_result.exit_code == 0, cli_result.output
        assert page == json.loads(cli_result.stdout)["samples"][0]["completion"], case


# --- safetensors and the command ---

def test_safetensors_hold_the_parameters_and_the_metadata(tmp_path, trained_run):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    result = CliRunner().invoke(cli, ["export", str(trained_run), "--format", "safetensors",
                                      "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    loaded = safetensors_numpy.load_file(tmp_path / "m.safetensors")
    params = runs.read_checkpoint(trained_run / "best.npz").params
    assert set(loaded) == set(params) and all(np.array_equal(loaded[k], params[k]) for k in params)
    with safe_open(tmp_path / "m.safetensors", "np") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["charrnn_config"])["model"]["cell"] == "lstm"
    assert "\n" in json.loads(metadata["charrnn_vocab"])["tokens"]


def test_export_writes_each_format_beside_the_run_by_default(tmp_path, trained_run):
    pytest.importorskip("onnx")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for fmt in ("html", "onnx", "safetensors"):
        result = CliRunner().invoke(cli, ["export", str(run), "--format", fmt])
        assert result.exit_code == 0, result.output
        assert (run / f"model.{fmt}").stat().st_size > 1000 and f"model.{fmt}" in result.stdout


def write_bidirectional_checkpoint(path):
    config = Config(model=ModelConfig(hidden_size=4, num_layers=1, bidirectional=True))
    model = RNNLM(config.model, VOCAB.size)
    params = model.init_params(np.random.default_rng(0))
    state = TrainingState(params, {"t": np.zeros((), np.int64), **{f"{s}/{k}": np.zeros_like(v) for s in "mv"
                                                                    for k, v in params.items()}},
                          model.initial_state(config.train.batch_size), np.random.default_rng(0))
    checkpoint.save(path, runs.checkpoint_of(state, config, VOCAB, path.parent))


def test_what_cannot_be_exported_is_one_line(tmp_path, trained_run, monkeypatch):
    write_bidirectional_checkpoint(tmp_path / "bi.npz")
    cases = [(["export", str(trained_run), "--format", "tflite"], "tflite"),
             (["export", str(tmp_path / "bi.npz"), "--format", "html", "-o", str(tmp_path / "x.html")], "bidirectional"),
             (["export", str(trained_run), "--format", "onnx", "--float16", "-o", str(tmp_path / "x.onnx")], "float16"),
             (["export", str(trained_run), "--format", "html", "-o", str(tmp_path / "no" / "x.html")],
              f"--output {tmp_path / 'no' / 'x.html'}: the folder {tmp_path / 'no'} does not exist"),
             (["export", str(tmp_path / "missing"), "--format", "html"], "no such run")]
    for argv, fragment in cases:
        result = CliRunner().invoke(cli, argv)
        assert_one_line_failure(result.exit_code, result.stderr, fragment)
    for module, fmt in (("onnx", "onnx"), ("safetensors", "safetensors")):
        monkeypatch.setitem(sys.modules, module, None)
        monkeypatch.setitem(sys.modules, f"{module}.numpy", None)
        result = CliRunner().invoke(cli, ["export", str(trained_run), "--format", fmt, "-o", str(tmp_path / f"y.{fmt}")])
        assert_one_line_failure(result.exit_code, result.stderr, install_command(fmt))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bi.npz"]


# --- the page in a real browser ---

@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it)")
def test_the_exported_page_generates_text_in_headless_chromium_from_file(tmp_path, trained_run):
    out = tmp_path / "model.html"
    assert CliRunner().invoke(cli, ["export", str(trained_run), "--format", "html", "-o", str(out)]).exit_code == 0

    def generated(seed):
        url = f"{out.as_uri()}?prime=ROMEO:&seed={seed}&length=80&temperature=0.8&autorun=1"
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        assert 'data-state="done"' in dom, dom[-2000:]
        return re.search(r'<span id="generated">(.*?)</span>', dom, re.S)[1], dom

    first, dom = generated(1)
    assert len(first.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")) == 80
    assert "ROMEO:" in dom and "80 tokens in" in dom and "lstm" in dom
    assert generated(1)[0] == first and generated(2)[0] != first


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_page_tokenizes_word_level_primes_as_python_does(tmp_path):
    text = "Naïve café-owners, 42 of them: ¡olé! Ünïcode_words and\ttabs\n\n— déjà vu…"
    vocab = Vocabulary.from_counts(Counter(tokenize(text, "word")[:-3]), "word")
    config = Config(model=ModelConfig(hidden_size=4, num_layers=1, encoding="embedding", embedding_dim=3))
    model = RNNLM(config.model, vocab.size)
    bundle = Bundle(model, model.init_params(np.random.default_rng(0)), vocab,
                    {"config": config.to_dict(), "progress": asdict(Progress())})
    spec, script = tmp_path / "spec.json", tmp_path / "encode.js"
    spec.write_text(model_json(bundle))
    script.write_text("const c = require(process.argv[2]); const fs = require('fs');\n"
                      "const m = new c.Model(JSON.parse(fs.readFileSync(process.argv[3], 'utf8')));\n"
                      "try { console.log(JSON.stringify(m.encode(process.argv[4]))); } catch (e) { console.log(e.message); }")
    module = importlib.resources.files("charrnn.export") / "charrnn.js"
    known = "".join(tokenize(text, "word")[:-3])
    result = subprocess.run([NODE, str(script), str(module), str(spec), known], capture_output=True, text=True)
    assert json.loads(result.stdout) == vocab.encode(known).tolist()
    unknown = subprocess.run([NODE, str(script), str(module), str(spec), text], capture_output=True, text=True)
    assert "words the model never saw" in unknown.stdout
