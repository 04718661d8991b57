"""The paper's evaluation of an ensemble: the analyses and `evaluate` (analyses.py, with `ANALYSES`, the one table
of the analyses by name), what the analyses read, streamed split by split (inputs.py), the HTML report (report.py)
and the class-split comparison of stores (comparison.py)."""
