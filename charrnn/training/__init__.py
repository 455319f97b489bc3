"""`charrnn train`: the training loop, optimizers, and data parallelism over threads, processes and MPI.

Open `loop.py` first (the `Trainer`: batches, steps, validation, checkpoints, stopping rules);
`parallel.py` shards a batch over worker threads, `layout.py` times the layouts to pick one.
"""
