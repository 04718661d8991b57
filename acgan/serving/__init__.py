"""Serving the trained ensemble: one KServe predictor for every class (predictor.py), the generator cache and the
batcher beside it (batching.py), and `acgan serve`'s HTTP server with its gallery page (server.py, gallery.html)."""
