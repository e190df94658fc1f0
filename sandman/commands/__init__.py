"""One module per CLI verb; cli.py imports each only when its verb runs."""
