"""The page of `charrnn inspect --html`: the text, each token coloured by one unit's value, with a
layer, kind and unit to choose, buttons that jump to the units found to track a feature, and on
hover the model's five likeliest next tokens.

One self-contained file (the template `page.html`, package data; no network): the values of the
page's kinds go in as 8-bit numbers, each unit scaled over its own range (value = lo + q / 255 *
(hi - lo)), unit by unit, so that a unit's values over the text are one contiguous run; the next
tokens' probabilities go in as 8-bit numbers too. A 2 x 512 GRU's hidden states over 20,000
characters make about 27 MB.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import json

KIND_NAMES = {"h": "h (hidden state)", "c": "c (cell)", "tanh_c": "tanh(c)", "i": "input gate", "f": "forget gate",
              "g": "candidate g", "o": "output gate", "r": "reset gate", "z": "update gate", "n": "candidate n"}


def b64(array) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def page(report, vocab, title: str, about: str, start: tuple[int, str, int]) -> str:
    """The whole page for an `inspect.report.Report` whose values were kept."""
    kept = report.kept
    count = kept.top_ids.shape[0]
    values = {f"{layer + 1}/{kind}": {"q": b64(q), "lo": lo.tolist(), "hi": hi.tolist()}
              for (layer, kind), (q, lo, hi) in kept.values.items()}
    kinds = sorted({kind for _, kind in kept.values}, key=list(KIND_NAMES).index)
    found = [{"feature": f.feature, "layer": f.layer + 1, "kind": f.kind, "unit": f.unit, "r": f.r}
             for units in report.correlations.ranked(1, kinds).values() for f in units]  # the best the page holds
    data = {"tokens": [vocab.tokens[i] for i in report.token_ids[:count]], "layers": report.layers,
            "units": report.units, "kinds": kinds, "kind_names": KIND_NAMES, "values": values,
            "top": {"ids": b64(kept.top_ids.astype("<u2")), "probs": b64((kept.top_probs * 255).round().astype("u1"))},
            "vocab": list(vocab.tokens), "found": found, "about": about,
            "start": {"layer": start[0] + 1, "kind": start[1], "unit": start[2]}}
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")  # cannot close the script element
    template = (importlib.resources.files("charrnn.inspect") / "page.html").read_text(encoding="utf-8")
    return template.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", blob)
