"""`--format safetensors`: the parameters under their PyTorch names, with the vocabulary, the
config and the training summary as JSON strings in the file's metadata. Loadable with
`safetensors.numpy.load_file`, and by PyTorch users with `safetensors.torch.load_file` (the
README shows the lines that rebuild the `torch.nn` modules). Needs the `[safetensors]` extra.
"""

from __future__ import annotations

import json

import numpy as np

from charrnn.errors import UserError
from charrnn.extras import install_command


def encode(bundle, float16: bool = False) -> bytes:
    try:
        from safetensors.numpy import save
    except ImportError:
        raise UserError(f"--format safetensors needs the safetensors package: {install_command('safetensors')}") from None
    metadata = {"format": "pt", "charrnn_config": json.dumps(bundle.meta["config"]),
                "charrnn_vocab": json.dumps({"level": bundle.vocab.level, "tokens": list(bundle.vocab.tokens),
                                             "unk_id": bundle.vocab.unk_id}, ensure_ascii=False),
                "charrnn_summary": json.dumps(bundle.description())}
    tensors = {name: np.ascontiguousarray(value) for name, value in bundle.params.items()}
    return save(tensors, metadata=metadata)
