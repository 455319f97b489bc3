"""The pure-NumPy model: input encoders, recurrent cells, layers, the softmax head, and the language
model built from them. Nothing in here prints, touches files or keeps state between calls: every
forward returns its cache and every backward takes it back.

Open `model.py` first (`RNNLM`: the forward, the backward through time, the `Stepper` that reads on
one token at a time); `cells.py` holds the RNN, LSTM and GRU equations beside the code.
"""
