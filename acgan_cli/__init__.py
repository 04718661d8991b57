"""The `acgan` command line (main.py; each command in commands/, its flags made by flags.py) and the figures of
`acgan bench` (benchmarks/): it runs the pipeline (`pipelines`) and the library (`acgan`) for a user; nothing
imports it back."""
