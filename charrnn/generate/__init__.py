"""Text from a trained model: sampling, stop strings, best-of-N and beam search.

Open `generation.py` first (the request every front end validates and the loop that answers it);
`sample.py` is the maths of one draw, `beam.py` the search, `stops.py` the stop strings.
"""
