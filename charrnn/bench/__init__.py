"""Measuring scripts: speed against PyTorch (`make bench`), where the time goes, MPI and serving.

Open `training.py` first (`python -m charrnn.bench.training`, the side-by-side table); `phases.py`
profiles one step, `mpi.py` and `serve.py` are `make bench-mpi` and `make bench-serve`.
"""
