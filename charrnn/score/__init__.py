"""`charrnn eval`: how well a model predicts a text, exactly, fast in pieces, or adapting as it reads.

Open `eval_text.py` first (a text -> its score, by the method chosen); `pieces.py` cuts a long text
into pieces read side by side, `dynamic.py` adapts the weights, `mixing.py` mixes the scores with an
adaptive n-gram model's (`ngram.py`), `report.py` draws the surprisal page.
"""
