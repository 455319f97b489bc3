"""The run directory: what `charrnn train` keeps on disk, and loading a trained model back.

Open `run.py` first (a run's files, claiming it, resuming it, loading its model); `checkpoint.py`
is the .npz + JSON format, `schema.py` what its metadata must hold, `plot.py` the loss curves.
"""
