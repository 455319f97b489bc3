"""`--format onnx`: the model as an ONNX graph (opset 17) on ONNX's own RNN, LSTM and GRU operators,
so any ONNX runtime can score a chunk or step one token at a time.

Inputs:  `tokens` int64 (T, B); per layer `h{l}` float32 (1, B, H), and `c{l}` for LSTM; for
         bag-of-words, `history` int64 (K-1, B), the previous tokens (-1: none yet).
Outputs: `logits` float32 (T, B, V); `h{l}_out`, `c{l}_out`, `history_out`: the state to feed
         into the next call. Zeros (and -1 for history) are the state at the start of a text.

Conventions mapped from PyTorch's: ONNX's LSTM gates are ordered i, o, f, c (PyTorch: i, f, g, o)
and its GRU gates z, r, h (PyTorch: r, z, n), with `linear_before_reset = 1`, PyTorch's formula;
B is the input biases followed by the recurrent ones. The one-hot input is ONNX's OneHot; a bag
of words is the mean of the one-hots of the last K tokens, a missing one counting as zero; an
embedding is a Gather. Needs the `[onnx]` extra.
"""

from __future__ import annotations

import json

import numpy as np

from charrnn.errors import UserError
from charrnn.extras import install_command

OPSET = 17
GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}  # PyTorch blocks in ONNX's order
OPERATOR = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def onnx_modules():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise UserError(f"--format onnx needs the onnx package: {install_command('onnx')}") from None
    return onnx, TensorProto, helper, numpy_helper


def reorder(array: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """(G*H, ...) PyTorch gate blocks -> ONNX's order."""
    blocks = array.reshape(len(GATE_ORDER[cell]), hidden, *array.shape[1:])
    return np.concatenate([blocks[i] for i in GATE_ORDER[cell]])


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; `name` makes unique value names."""

    def __init__(self, helper, numpy_helper, tensor_proto):
        self.helper, self.numpy_helper, self.types = helper, numpy_helper, tensor_proto
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self.count = 0

    def constant(self, name: str, value) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, **attributes) -> list[str]:
        if isinstance(outputs, int):
            self.count += 1
            outputs = [f"{op.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, **attributes))
        return outputs

    def value(self, name: str, elem_type, shape) -> object:
        return self.helper.make_tensor_value_info(name, elem_type, shape)


def encode_inputs(g: GraphBuilder, bundle) -> str:
    """tokens (T, B) [and history] -> layer-0 inputs (T, B, I)."""
    config, V = bundle.model.config, bundle.vocab.size
    if config.encoding == "embedding":
        table = g.constant("embedding.weight", bundle.params["embedding.weight"].astype(np.float32))
        return g.node("Gather", [table, "tokens"], axis=0)[0]
    depth = g.constant("depth", np.array([V], np.int64))
    values = g.constant("one_hot_values", np.array([0.0, 1.0], np.float32))
    K = config.bow_window if config.encoding == "bow" else 1
    if K == 1:
        return g.node("OneHot", ["tokens", depth, values], axis=-1)[0]
    full = g.node("Concat", ["history", "tokens"], axis=0)[0]
    length = g.node("Shape", ["tokens"], start=0, end=1)[0]
    axis0 = g.constant("axis0", np.array([0], np.int64))
    zero = g.constant("zero_id", np.array(0, np.int64))
    last_axis = g.constant("last_axis", np.array([-1], np.int64))
    hots = []
    for j in range(K):  # the token j steps back, for every time step
        start = g.constant(f"bag_start_{j}", np.array([K - 1 - j], np.int64))
        end = g.node("Add", [start, length])[0]
        ids = g.node("Slice", [full, start, end, axis0])[0]
        valid = g.node("GreaterOrEqual", [ids, zero])[0]
        safe = g.node("Where", [valid, ids, zero])[0]
        hot = g.node("OneHot", [safe, depth, values], axis=-1)[0]
        mask = g.node("Unsqueeze", [g.node("Cast", [valid], to=g.types.FLOAT)[0], last_axis])[0]
        hots.append(g.node("Mul", [hot, mask])[0])
    total = g.node("Sum", hots)[0]
    scale = g.constant("bag_scale", np.array(1.0 / K, np.float32))
    keep_from = g.constant("history_start", np.array([-(K - 1)], np.int64))
    to_end = g.constant("history_end", np.array([np.iinfo(np.int64).max], np.int64))
    g.node("Slice", [full, keep_from, to_end, axis0], ["history_out"])
    return g.node("Mul", [total, scale])[0]


def build(bundle):
    """The ONNX ModelProto of a bundle (see the module docstring for its inputs and outputs)."""
    onnx, TensorProto, helper, numpy_helper = onnx_modules()
    config, params = bundle.model.config, bundle.params
    H, V, cell = config.hidden_size, bundle.vocab.size, config.cell
    g = GraphBuilder(helper, numpy_helper, TensorProto)
    g.inputs.append(g.value("tokens", TensorProto.INT64, ["time", "batch"]))
    K = config.bow_window if config.encoding == "bow" else 1
    if K > 1:
        g.inputs.append(g.value("history", TensorProto.INT64, [K - 1, "batch"]))
        g.outputs.append(g.value("history_out", TensorProto.INT64, [K - 1, "batch"]))
    x = encode_inputs(g, bundle)
    squeeze_axis = g.constant("direction_axis", np.array([1], np.int64))
    for layer in range(config.num_layers):
        f32 = {k: params[f"rnn.{k}_l{layer}"].astype(np.float32) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        W = g.constant(f"W_{layer}", reorder(f32["weight_ih"], cell, H)[None])
        R = g.constant(f"R_{layer}", reorder(f32["weight_hh"], cell, H)[None])
        B = g.constant(f"B_{layer}", np.concatenate([reorder(f32["bias_ih"], cell, H),
                                                      reorder(f32["bias_hh"], cell, H)])[None])
        states = [f"h{layer}"] + ([f"c{layer}"] if cell == "lstm" else [])
        for state in states:
            g.inputs.append(g.value(state, TensorProto.FLOAT, [1, "batch", H]))
            g.outputs.append(g.value(f"{state}_out", TensorProto.FLOAT, [1, "batch", H]))
        attributes = {"hidden_size": H}
        if cell == "rnn":
            attributes["activations"] = ["Relu" if config.nonlinearity == "relu" else "Tanh"]
        if cell == "gru":
            attributes["linear_before_reset"] = 1
        y = g.node(OPERATOR[cell], [x, W, R, B, "", *states],
                   [f"y_{layer}", *[f"{state}_out" for state in states]], **attributes)[0]
        x = g.node("Squeeze", [y, squeeze_axis])[0]
    head_t = g.constant("head.weight_t", np.ascontiguousarray(params["head.weight"].astype(np.float32).T))
    head_b = g.constant("head.bias", params["head.bias"].astype(np.float32))
    g.node("Add", [g.node("MatMul", [x, head_t])[0], head_b], ["logits"])
    g.outputs.insert(0, g.value("logits", TensorProto.FLOAT, ["time", "batch", V]))
    graph = helper.make_graph(g.nodes, "charrnn", g.inputs, g.outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="charrnn")
    helper.set_model_props(model, {"charrnn_config": json.dumps(bundle.meta["config"]),
                                   "charrnn_vocab": json.dumps(list(bundle.vocab.tokens), ensure_ascii=False),
                                   "charrnn_summary": json.dumps(bundle.description())})
    onnx.checker.check_model(model)
    return model


def encode(bundle, float16: bool = False) -> bytes:
    return build(bundle).SerializeToString()
