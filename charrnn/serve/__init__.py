"""`charrnn serve`: a loaded model behind an HTTP API and a playground page (the `[serve]` extra)."""
