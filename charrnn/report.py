"""A self-contained HTML page showing a text with each token coloured by its surprisal, -log2 p.

It answers "what did the model find hard?": white is predictable, deep red is a surprise. The
first token, which nothing predicts, is grey. Hovering a token shows its surprisal in bits.
"""

from __future__ import annotations

import html

import numpy as np

SCALE_BITS = 10.0  # surprisal at which the colour saturates


def colour(bits: float) -> str:
    """0 bits -> white, through yellow, to deep red at SCALE_BITS and above."""
    x = min(max(bits / SCALE_BITS, 0.0), 1.0)
    if x < 0.5:
        r, g, b = 255, 255, int(255 * (1 - 2 * x))
    else:
        r, g, b = 255 - int(75 * (2 * x - 1)), int(255 * (2 - 2 * x)), 0
    return f"#{r:02x}{g:02x}{b:02x}"


def surprisal_page(tokens: list[str], nats: np.ndarray, summary: dict, title: str) -> str:
    """tokens (N,), nats (N - 1,) NLL of tokens[1:] -> the HTML page."""
    bits = np.asarray(nats) / np.log(2)
    spans = [f'<span class="first" title="no prediction">{html.escape(tokens[0])}</span>'] if tokens else []
    spans += [f'<span style="background:{colour(b)}" title="{b:.2f} bits">{html.escape(t)}</span>'
              for t, b in zip(tokens[1:], bits)]
    legend = "".join(f'<span class="swatch" style="background:{colour(v)}">{v:g}</span>'
                     for v in np.linspace(0, SCALE_BITS, 6))
    figures = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.text {{ font-family: monospace; white-space: pre-wrap; line-height: 1.5; border: 1px solid #ccc; padding: 1em; }}
.first {{ background: #ddd; }}
.swatch {{ display: inline-block; width: 3em; text-align: center; font-family: monospace; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }} th, td {{ text-align: left; padding: 0.2em 1em 0.2em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{figures}</table>
<p>Surprisal, bits (&minus;log<sub>2</sub> p): {legend} and above</p>
<div class="text">{"".join(spans)}</div>
</body></html>
"""
