"""`python -m charrnn` runs the command-line interface."""

from charrnn.launch import main

main()
