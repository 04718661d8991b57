"""The README's first lines are the two set-up commands, and CI runs the second one."""

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    install_and_run, install_and_test = lines[1], lines[2]
    for line in (install_and_run, install_and_test):
        assert re.search(r"pip install (-q )?-c constraints\.txt", line)  # torch: the CPU wheel, in every install
    assert "acgan " in install_and_run and install_and_test.endswith("python -m pytest")
    assert "apt-get install -y -qq kubectl" in install_and_test  # tests/deploy renders the manifests with it


def _ci_run(tmp_path: Path, readme: str) -> subprocess.CompletedProcess:
    """.ci/run as written, beside `readme`, with its last step echoing the command instead of running the suite."""
    script = (ROOT / ".ci" / "run").read_text()
    runs = 'bash -c "$test_command"'
    assert script.count(runs) == 1
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text(script.replace(runs, 'echo "would run: $test_command"'))
    (tmp_path / "README.md").write_text(readme)
    return subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=30)


def test_ci_runs_the_readme_test_command(tmp_path):
    readme = (ROOT / "README.md").read_text()
    install_and_test = readme.splitlines()[2]
    ci = _ci_run(tmp_path, readme)
    assert ci.returncode == 0, ci.stderr
    assert ci.stdout.splitlines() == [f"+ {install_and_test}", f"would run: {install_and_test}"]


def test_ci_refuses_a_readme_whose_third_line_is_not_the_test_command(tmp_path):
    lines = (ROOT / "README.md").read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # the run command where CI expects the test command
    ci = _ci_run(tmp_path, "\n".join(lines) + "\n")
    assert ci.returncode == 1 and "would run" not in ci.stdout
    assert ci.stderr.startswith(".ci/run: README.md line 3 is not the test command: ")


def _dependency_table() -> dict[str, bool]:
    """Every package the README's dependency table names -> whether its row says it is for tests only."""
    text = (ROOT / "README.md").read_text()
    table = text.partition("## Dependencies")[2].split("\n\n")[1]
    named = {}
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1]
        tests_only = "(tests only)" in cell
        for name in cell.replace("(tests only)", "").split(","):
            named[name.strip()] = tests_only
    return named


def test_the_dependency_table_names_every_dependency_where_it_is_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda requirement: re.split(r"[<>=!~ ;]", requirement)[0]  # noqa: E731
    runtime = {name(r) for r in project["dependencies"]}
    test_only = {name(r) for r in project["optional-dependencies"]["test"]}
    assert _dependency_table() == {**{n: False for n in runtime}, **{n: True for n in test_only}}
