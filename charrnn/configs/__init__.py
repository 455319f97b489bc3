"""The configs shipped with charrnn (`charrnn train -c NAME`), and a Slurm script for MPI training."""
