"""The paper's evaluation of an ensemble: the analyses and `evaluate` (analyses.py, with `ANALYSES`, the one table
of the analyses by name), the pass over the class splits (stream.py) gathering the parts the analyses read (parts.py)
from what the evaluation loads (inputs.py), the HTML report (report.py) and the class-split comparison of stores
(comparison.py)."""
