"""Checkpoint arrays load into torch.nn.RNN/LSTM/GRU unchanged and give the same outputs.

PyTorch is never a runtime dependency: this module is skipped where torch is not installed (a plain
`make test`); `.ci/run` installs torch 2.13 into the test environment, so CI runs it.
"""

import numpy as np
import pytest

from charrnn.config import ModelConfig
from charrnn.nn.model import RNNLM

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("cell, nonlinearity", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pytorch_module_with_our_arrays_gives_our_logits(cell, nonlinearity, bidirectional):
    V, H, T, B = 9, 6, 5, 3
    config = ModelConfig(cell=cell, nonlinearity=nonlinearity, hidden_size=H, num_layers=2,
                         bidirectional=bidirectional, encoding="embedding", embedding_dim=4, dtype="float64")
    model = RNNLM(config, V)
    params = model.init_params(np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, V, (T, B))
    ours, _, _ = model.forward(params, tokens, model.initial_state(B))

    kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        4, H, num_layers=2, bidirectional=bidirectional, **kwargs).double()
    rnn.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in params.items() if k.startswith("rnn.")})
    embedding = torch.nn.Embedding(V, 4).double()
    embedding.load_state_dict({"weight": torch.from_numpy(params["embedding.weight"])})
    head = torch.nn.Linear(model.output_size, V).double()
    head.load_state_dict({"weight": torch.from_numpy(params["head.weight"]),
                          "bias": torch.from_numpy(params["head.bias"])})
    with torch.no_grad():
        theirs = head(rnn(embedding(torch.from_numpy(tokens)))[0]).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
