"""What the hardware and libraries give: BLAS and MKL bindings, the machine's facts, memory.

Open `machine.py` first (what CPU and BLAS this is); `blas.py` and `mkl.py` bind the libraries,
`memory.py` estimates what a model needs before anything is allocated.
"""
