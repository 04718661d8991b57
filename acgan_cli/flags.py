"""The command line's flags, made from the settings' fields: a new setting is a new flag, its help the field's
description and the default it has there, and only the flags given reach the validated settings (`given`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pydantic import BaseModel

from acgan.cluster_settings import ClusterSettings
from acgan.presets import PRESETS, preset_defaults
from acgan.settings import value_type

if TYPE_CHECKING:
    from acgan.store import Store

# The settings some preset sets: a flag of one of them takes true|false, so that it overrides the preset either way.
PRESET_SETTINGS = {name for values in PRESETS.values() for name in values}


def boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def given(args: argparse.Namespace, fields: dict) -> dict:
    """Only the options the user gave, so the validated model's defaults apply to the rest."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def validated(args: argparse.Namespace, model: type[BaseModel]) -> BaseModel:
    """`model` from the options given, its own defaults (or its preset's) for the rest."""
    return model.model_validate(given(args, model.model_fields))


def given_values(args: argparse.Namespace, model: type[BaseModel]) -> dict:
    """The options of `model` given, validated as `model`'s (a node selector's key=value flags a mapping): what a
    command replaces of recorded settings."""
    values = given(args, model.model_fields)
    return model.model_validate(values).model_dump(include=set(values))


def flag_help(description: str | None, default) -> str:
    """A flag's help: its setting's description, then the default it has here, if any (argparse reads % as a
    format)."""
    if isinstance(default, bool):
        default = str(default).lower()
    elif isinstance(default, list):
        default = ",".join(map(str, default))
    elif isinstance(default, dict):
        default = ",".join(f"{k}={v}" for k, v in default.items())
    shown = f" (default {default})" if default not in (None, "") else ""
    return f"{description or ''}{shown}".replace("%", "%%")


def settings_flags(g, model: type[BaseModel], skip: set[str] = frozenset(), preset: str | None = None,
                   recorded: bool = False, required: set[str] = frozenset()) -> dict[str, argparse.Action]:
    """One flag per field of a settings model (but `skip`'s and the preset), its help the field's description and
    the default it has under `preset` (the field's own without one; none shown where the store's recorded value is
    the default, as on `acgan rerun`); returns the flags made, by field. A list is given comma-separated, a mapping
    as repeated key=value flags. A true-or-false setting that no preset sets is a switch: `--name` turns on one that is off by default,
    `--no-name` turns off one that is on."""
    made, defaults = {}, None if recorded else preset_defaults(model, preset)
    for name, field in model.model_fields.items():
        if name in skip or name == "preset":
            continue
        flag, kind = f"--{name.replace('_', '-')}", value_type(field.annotation)
        shown = None if defaults is None or name in required else defaults.get(name)
        if kind is bool and name not in PRESET_SETTINGS:
            on = field.default is True
            made[name] = g.add_argument(f"--no-{flag[2:]}" if on else flag, dest=name, default=None,
                                        action="store_false" if on else "store_true",
                                        help=flag_help(field.description, None))
            continue
        how = {"action": "append", "metavar": "KEY=VALUE"} if kind is dict else \
            {"type": {bool: boolean, list: str}.get(kind, kind)}
        made[name] = g.add_argument(flag, **how, required=name in required, help=flag_help(field.description, shown))
    return made


def preset_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--preset", choices=list(PRESETS), default=default, help=f"named defaults of the settings: "
                   f"{' or '.join(PRESETS)} (default {default}); a setting given as a flag overrides the preset's")


def settings_options(p: argparse.ArgumentParser, model: type[BaseModel], preset: str, skip: set[str] = frozenset(),
                     title: str | None = None, required: set[str] = frozenset()) -> None:
    """--preset and the flags of `model`'s settings, each showing its value under `preset`."""
    g = p.add_argument_group(title) if title else p
    preset_option(g, preset)
    settings_flags(g, model, skip, preset, required=required)


def cluster_options(p: argparse.ArgumentParser, recorded: bool = False, required: set[str] = frozenset()) -> None:
    """ClusterSettings' flags; on `acgan rerun` the store's recorded values are the defaults."""
    title = "cluster settings (fixed when the pipeline is compiled" + ("; default: as `acgan submit` recorded them "
                                                                      "in the store)" if recorded else ")")
    settings_flags(p.add_argument_group(title), ClusterSettings, recorded=recorded, required=required)


def ready_store(uri: str) -> Store:
    """The store of a command's --store, which must exist already."""
    from acgan.store import open_store

    store = open_store(uri)
    store.ensure_ready()
    return store


def verbose_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="a local run: every task's full log here, and the result as JSON (default: a progress "
                        "display, task logs in files under PIPELINE_ROOT/logs/, and a summary)")
