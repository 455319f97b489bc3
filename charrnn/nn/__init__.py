"""The pure-NumPy building blocks: input encoders, recurrent cells, layers and the softmax head.

Nothing in here prints, touches files or keeps state between calls: every forward returns its
cache and every backward takes it back.
"""
