"""The fault-injection suite records one row per fault; the table is printed at the end of the run and written to
build/reliability.md (docs/reliability.md is filled from it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import one_thread

ROWS: list[dict] = []
COLUMNS = ("fault", "how injected", "trials", "survived", "work lost", "data lost")


@pytest.fixture(scope="package", autouse=True)
def _single_threaded():
    """Every fault test compares weights bit for bit (see one_thread)."""
    with one_thread():
        yield


def record(fault: str, injected: str, trials: int, survived: int, work_lost: str, data_lost: str) -> None:
    ROWS.append(dict(zip(COLUMNS, (fault, injected, trials, survived, work_lost, data_lost))))


@pytest.fixture
def fault_report():
    """Call it after a test's assertions: a row is a fault the test survived."""
    return record


@pytest.fixture(scope="session")
def fault_record():
    """`record` for module-scoped fixtures that write one row for a whole module's tests (this conftest is not
    importable under its own name: tests/faults is no package)."""
    return record


def table() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in ROWS]
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not ROWS:
        return
    out = Path(config.rootpath) / "build" / "reliability.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table())
    terminalreporter.write_sep("-", f"fault injection (also in {out.relative_to(config.rootpath)})")
    terminalreporter.write(table())
