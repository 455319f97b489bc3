"""Export a trained model to run outside charrnn: a self-contained web page, ONNX, or safetensors.

Start here (`export` below): it loads and checks the checkpoint once, hands the `Bundle` to the
format's module (`web.py`, `onnx_graph.py`, `tensors.py`), which maps the flat, PyTorch-named
parameters to its target, and writes what its `encode` returns through `charrnn.files.outputs`.
Optional packages (onnx, safetensors) are imported by their format's module only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.vocab import Vocabulary
from charrnn.errors import UserError
from charrnn.files.outputs import OutputFile
from charrnn.nn.model import RNNLM

FORMATS = {"html": "web", "onnx": "onnx_graph", "safetensors": "tensors"}
SUFFIXES = {"html": ".html", "onnx": ".onnx", "safetensors": ".safetensors"}


@dataclass
class Bundle:
    """What every exporter needs: the model, its parameters, vocabulary and checkpoint metadata."""

    model: RNNLM
    params: dict[str, np.ndarray]
    vocab: Vocabulary
    meta: dict

    def description(self) -> dict:
        """The model and its training, as shown on the page and kept in file metadata."""
        cfg, progress = self.model.config, self.meta["progress"]
        described = {"cell": cfg.cell + (f" ({cfg.nonlinearity})" if cfg.cell == "rnn" else ""),
                     "layers": cfg.num_layers, "hidden size": cfg.hidden_size, "encoding": cfg.encoding,
                     "vocabulary": f"{self.vocab.size} {self.vocab.level} tokens",
                     "parameters": f"{sum(int(v.size) for v in self.params.values()):,}",
                     "trained": f"{progress['step']:,} steps, {progress['tokens']:,} tokens"}
        if progress.get("best_val") is not None:
            described["best val loss"] = f"{progress['best_val']:.4f} nats/token"
        return described


def export(target: Path, fmt: str, output: Path | None, float16: bool = False, force: bool = False) -> Path:
    """Write the model of a run directory or checkpoint in `fmt`; returns the path written. The output
    keeps the rule of `charrnn.files.outputs`: an existing file is replaced only with `force`."""
    from charrnn.runs.run import find_checkpoint, load_model

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output is None:  # RUN/model.<suffix>, or the checkpoint's name with the format's suffix
        target = Path(target)
        output = target / f"model{SUFFIXES[fmt]}" if target.is_dir() else target.with_suffix(SUFFIXES[fmt])
    destination = OutputFile(output, "--output", force)
    find_checkpoint(target, "export")  # a missing run, or an ensemble, is said first
    destination.check()
    model, params, vocab, meta = load_model(target, "export")
    if model.config.bidirectional:
        raise UserError("a bidirectional model reads the future, so it cannot be stepped or exported; "
                        "export a unidirectional one")
    if float16 and fmt != "html":
        raise UserError("--float16 applies to --format html only")
    encoder = importlib.import_module(f"charrnn.export.{FORMATS[fmt]}")
    destination.write(encoder.encode(Bundle(model, params, vocab, meta), float16=float16))
    return output
