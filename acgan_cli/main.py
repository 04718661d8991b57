"""`acgan`: a thin command line over the library. Bad input -> one line on stderr, exit status 2, no traceback.
Each command is a module of acgan_cli/commands/, named after it; its settings' flags are made from their fields
(acgan_cli/flags.py)."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys

from pydantic import ValidationError

from acgan import allocator
from acgan.errors import UserError, explain
from acgan.uri import check_uri
from acgan_cli.commands import COMMANDS

INTERRUPTED = {"serve": "stopped serving (Ctrl-C)"}  # what a Ctrl-C ends with; the others: a training command's
# Every option that takes a URI (a store, a data source, a class list, an endpoint): checked where a command starts.
URI_OPTIONS = {"store": "--store", "stores": "STORE", "source": "--source", "class_list": "--class-list",
               "host": "--host", "source_endpoint": "--source-endpoint"}


def _check_uris(args: argparse.Namespace) -> None:
    """The URIs the user gave, each checked once before the command compiles, submits, logs or writes anything:
    a secret inside one is refused in a line that shows it redacted."""
    for name, flag in URI_OPTIONS.items():
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None:
                check_uri(str(value), flag)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), like every other error of the command, and a flag is
    never taken for a longer one it begins (allow_abbrev: `--step 100` is not `--steps 100`); an unknown flag is
    answered with the nearest real one of its command and that command's help. `command` and `flags` show what a
    parser was built with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        message = message.replace("\r", "\\r").replace("\n", "\\n")  # a value given with a line break in it
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self.command(getattr(parsed, "command", None))
            flag = next((a for a in unknown if a.startswith("-")), unknown[0])
            nearest = _nearest_flag(flag.partition("=")[0], command)
            command.error(f"unrecognized argument {flag}" + (f"; did you mean {nearest}?" if nearest else ""))
        return parsed

    def command(self, name: str | None) -> Parser:
        """The parser of the subcommand `name`, else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return self

    def commands(self) -> list[str]:
        """The subcommands' names, in the order `--help` lists them."""
        return [name for action in self._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices]

    def flags(self) -> dict[str, argparse.Action]:
        """This parser's options by destination (`--help` left out)."""
        return {a.dest: a for a in self._actions if a.option_strings and a.dest != "help"}


def _nearest_flag(given: str, parser: Parser) -> str | None:
    """The option of `parser` a mistyped `given` most likely meant: one it begins or that begins it (`--step`:
    `--steps`; `--num`: `-n`), else the closest spelling (difflib)."""
    flags = [o for a in parser.flags().values() for o in a.option_strings]
    bare = given.lstrip("-")
    if not bare:
        return None
    prefixed = [f for f in flags if f.lstrip("-").startswith(bare) or bare.startswith(f.lstrip("-"))]
    if prefixed:
        return min(prefixed, key=lambda f: abs(len(f.lstrip("-")) - len(bare)))
    close = difflib.get_close_matches(given, flags, n=1, cutoff=0.6)
    return close[0] if close else None


def build_parser() -> Parser:
    parser = Parser(prog="acgan", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allocator.tune()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "minio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        _check_uris(args)
        result = args.run(args)
    except (UserError, ValidationError) as e:
        print(f"acgan {args.command}: error: {explain(e)}", file=sys.stderr)
        return getattr(e, "exit_status", 2)  # a run stopped by a signal: the shell's status for it
    except KeyboardInterrupt:
        print(f"acgan {args.command}: {INTERRUPTED.get(args.command, 'interrupted; complete checkpoints are kept')}",
              file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
