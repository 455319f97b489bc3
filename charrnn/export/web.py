"""`--format html`: one self-contained page that generates text in the browser from `file://`.

The page is the static template `page.html` with three things filled in: the model's description,
its parameters as JSON (each array base64 of little-endian float32, or float16 with
`--float16` to halve the size), and `charrnn.js`, which steps every cell, encoding and depth the
trainer supports and samples with temperature, top-k, top-p and a seed. It draws with NumPy's own
generator and sums, so a seed gives the text `charrnn sample` gives (see `charrnn.js`). Nothing is
fetched.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import json

import numpy as np

from charrnn.generate.sample import encode_prime

CONFIG_KEYS = ("cell", "nonlinearity", "hidden_size", "num_layers", "encoding", "bow_window", "embedding_dim")


def array_spec(value: np.ndarray, float16: bool) -> dict:
    """array -> {dtype, shape, data: base64 of its little-endian values}."""
    dtype = "<f2" if float16 else "<f4"
    data = np.ascontiguousarray(value, dtype=dtype).tobytes()
    return {"dtype": "float16" if float16 else "float32", "shape": list(value.shape),
            "data": base64.b64encode(data).decode("ascii")}


def model_json(bundle, float16: bool = False) -> str:
    """The model as charrnn.js reads it: config, vocabulary and named parameter arrays."""
    config = {key: getattr(bundle.model.config, key) for key in CONFIG_KEYS}
    start, start_text, _ = encode_prime("", bundle.vocab)  # what a text begins after, as `charrnn sample` has it
    vocab = {"level": bundle.vocab.level, "tokens": list(bundle.vocab.tokens), "unk_id": bundle.vocab.unk_id,
             "start": int(start[-1]), "start_text": start_text}
    params = {name: array_spec(value, float16) for name, value in bundle.params.items()}
    return json.dumps({"config": config, "vocab": vocab, "params": params}, ensure_ascii=False)


def resource(name: str) -> str:
    return (importlib.resources.files("charrnn.export") / name).read_text(encoding="utf-8")


def page(bundle, float16: bool = False) -> str:
    """The whole HTML page."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in bundle.description().items())
    title = f"charrnn: {bundle.model.config.num_layers} x {bundle.model.config.hidden_size} {bundle.model.config.cell}"
    safe_json = model_json(bundle, float16).replace("</", "<\\/")  # cannot close the script element
    filled = resource("page.html").replace("{{TITLE}}", html.escape(title)).replace("{{MODEL_ROWS}}", rows)
    return filled.replace("{{CHARRNN_JS}}", resource("charrnn.js")).replace("{{MODEL_JSON}}", safe_json)


def encode(bundle, float16: bool = False) -> str:
    return page(bundle, float16)
