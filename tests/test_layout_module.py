"""acgan/layout.py against docs/design.md's "What the store holds": every key and prefix the module defines is listed
(a prefix by itself or as the start of a listed key), and nothing is listed that the module lacks."""

import inspect
import re
from pathlib import Path

from acgan import layout

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
EXAMPLE = {"split": 0, "step": 2000, "moved_at_ms": 1767225600000}  # the values the listing shows


def listed() -> set[str]:
    """The listing's keys: a line's first column; a file indented under a checkpoint's folder is in that folder
    (`T-`, the writer's token, left out); lines indented further continue a description."""
    block = DESIGN.read_text().split("## What the store holds\n\n```\n", 1)[1].split("```", 1)[0]
    keys, folder = set(), ""
    for line in block.splitlines():
        entry = re.split(r" {2,}", line.strip())[0]
        if not line.startswith(" "):
            keys.add(entry)
            folder = entry
        elif line.startswith("    ") and not line.startswith("     "):
            keys.add(folder + entry.removeprefix("T-"))
    return {key.rstrip("/") for key in keys}


def defined() -> tuple[set[str], set[str]]:
    """The module's keys and prefixes, its functions called with EXAMPLE's values."""
    keys = {v for k, v in vars(layout).items() if k.endswith("_KEY")}
    prefixes = {v for k, v in vars(layout).items() if k.endswith("_PREFIX")}
    for name, function in inspect.getmembers(layout, inspect.isfunction):
        parameters = inspect.signature(function).parameters
        if function.__module__ == layout.__name__ and set(parameters) <= set(EXAMPLE):
            (prefixes if name.endswith("_prefix") else keys).add(function(**{p: EXAMPLE[p] for p in parameters}))
    checkpoint = layout.checkpoint_prefix(EXAMPLE["split"], EXAMPLE["step"])
    keys |= {f"{checkpoint}/{v}" for k, v in vars(layout).items() if k.endswith("_FILE") or k == "MARKER"}
    return {k.rstrip("/") for k in keys}, {p.rstrip("/") for p in prefixes}


def test_the_design_listing_is_the_layout_module():
    docs = listed()
    keys, prefixes = defined()
    assert keys - docs == set(), "keys the listing lacks"
    assert {p for p in prefixes if not any(d.startswith(p) for d in docs)} == set(), "prefixes the listing lacks"
    assert docs - keys - prefixes == set(), "listed but not in acgan/layout.py"


def test_a_lease_key_names_its_split_and_nothing_else_does():
    assert layout.split_of_lease(layout.lease_key(12)) == 12
    assert layout.split_of_lease(layout.stats_key(12)) is None
    assert layout.split_of_lease(layout.RUN_LEASE_KEY) is None
    assert layout.split_of_lease("splits/split-1/lease.json") is None
