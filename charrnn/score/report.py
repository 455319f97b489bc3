"""A self-contained HTML page showing a text with each token coloured by its surprisal, -log2 p.

It answers "what did the model find hard?": white is predictable, deep red is a surprise (in
white letters, so it stays readable). The first token, which nothing predicts, is grey; tokens
the vocabulary lacks are shown struck through on grey, never dropped. Hovering a token shows
its surprisal in bits.
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


def span(token: str, bits: float, unknown: bool) -> str:
    text = html.escape(token)
    if unknown:
        scored = "" if np.isnan(bits) else f", scored as &lt;unk&gt;: {bits:.2f} bits"
        return f'<span class="unknown" title="not in the vocabulary{scored}">{text}</span>'
    if np.isnan(bits):
        return f'<span class="first" title="no prediction">{text}</span>'
    ink = ' color:#fff;' if bits / SCALE_BITS > 0.6 else ""
    return f'<span style="background:{colour(bits)};{ink}" title="{bits:.2f} bits">{text}</span>'


def page_parts(runs, summary: dict, title: str):
    """The page in pieces, for a text of any length: `runs` yields (tokens (K,) as text, nats (K,),
    unknown (K,)) in order, and is read once."""
    legend = "".join(f'<span class="swatch" style="background:{colour(v)};{" color:#fff;" if v / SCALE_BITS > 0.6 else ""}">'
                     f'{v:g}</span>' for v in np.linspace(0, SCALE_BITS, 6))
    figures = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    yield f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.text {{ font-family: monospace; white-space: pre-wrap; line-height: 1.5; border: 1px solid #ccc; padding: 1em; }}
.first {{ background: #ddd; }}
.unknown {{ background: #bbb; text-decoration: line-through; outline: 1px dashed #666; }}
.swatch {{ display: inline-block; width: 3em; text-align: center; font-family: monospace; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }} th, td {{ text-align: left; padding: 0.2em 1em 0.2em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{figures}</table>
<p>Surprisal, bits (&minus;log<sub>2</sub> p): {legend} and above;
<span class="first">&nbsp;no prediction&nbsp;</span> <span class="unknown">&nbsp;not in the vocabulary&nbsp;</span></p>
<div class="text">"""
    for tokens, nats, unknown in runs:
        bits = np.asarray(nats, dtype=np.float64) / np.log(2)
        yield "".join(span(t, b, u) for t, b, u in zip(tokens, bits, unknown))
    yield """</div>
</body></html>
"""
