"""`python -m charrnn` runs the command-line interface."""

from charrnn.cli import main

main()
