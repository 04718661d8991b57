"""The `acgan` commands, one module each, named after the command: each adds its parser (`add_parser`) and runs it
(the function its parser's `run` default names). `COMMANDS` is the order `acgan --help` lists them in."""

from acgan_cli.commands import (bench, compare, compile, evaluate, plan, prepare, rerun, run, sample, serve, status,
                                submit, train_split, unlock)

COMMANDS = (prepare, train_split, run, compile, submit, status, rerun, unlock, plan, evaluate, bench, compare, sample,
            serve)
