"""The `acgan` command line (main.py) and its `acgan bench` harness (bench.py): it runs the pipeline (`pipelines`)
and the library (`acgan`) for a user; nothing imports it back."""
