"""From text to token ids: corpora, vocabularies, streaming `prepare`, the split arrays, word vectors.

Open `prepare.py` first (corpus -> vocab.json and train/val/test.bin); `splits.py` reads what it
wrote as memory maps and cuts training batches from them.
"""
