"""charrnn: character-level recurrent language models on a pure-NumPy core."""

__version__ = "0.1.0"
