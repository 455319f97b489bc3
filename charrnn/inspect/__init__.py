"""`charrnn inspect`: what a trained model's cells learned, and how far back it remembers.

Open `report.py` first (a text -> every figure the command shows); `values.py` records every
unit's value as the model reads, `units.py` finds units that track features of the text
(`features.py`), `gates.py` measures gate saturation, `memory.py` the memory curve and the
gradient's decay, and `page.py` draws the page.
"""
