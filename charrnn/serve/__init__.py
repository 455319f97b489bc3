"""`charrnn serve`: a loaded model behind an HTTP API and a playground page (the `[serve]` extra).

Open `app.py` first: the routes, which only parse and check the JSON and call the generation library.
"""
