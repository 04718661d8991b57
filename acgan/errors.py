"""The one exception type for bad input, the one-line explanation the CLI and the pipeline steps print, and the
commands those lines advise, written so that each runs as printed."""

from __future__ import annotations

import shlex


class UserError(Exception):
    """Bad input or an unusable environment: the message names the problem and the fix."""


def explain(e: Exception) -> str | None:
    """One line for an error a user can fix (bad input, a validation error); None for a bug, which keeps its traceback."""
    from pydantic import ValidationError

    if isinstance(e, UserError):
        return one_line(str(e))
    if isinstance(e, ValidationError):
        loc, msg = first_problem(e)
        option = f"--{loc.replace('_', '-')}" if loc else "settings"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        return one_line(f"{option}: {msg}{more}")
    return None


def first_problem(e) -> tuple[str, str]:
    """(dotted location, message) of a pydantic ValidationError's first problem."""
    err = e.errors()[0]
    return ".".join(str(part) for part in err["loc"]), err["msg"].removeprefix("Value error, ")


def one_line(text: str) -> str:
    """Control characters that came in with the user's input (a newline in a label) are shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def command(*words: object) -> str:
    """A command as a message shows it: in backticks, each word shell-quoted (a store path with a space in it), so
    that it runs as printed when pasted."""
    return "`" + shlex.join(str(word) for word in words) + "`"


def rerun_command(store_uri: str) -> str:
    """The command that trains what a store lacks and assembles it again: on this machine (which reaches a store
    in object storage too, with its ACGAN_S3_* environment); a cluster's is the same with --host for --local."""
    return command("acgan", "rerun", "--store", store_uri, "--local")
