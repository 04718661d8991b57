"""The README's first lines are the two set-up commands, and CI runs the second one."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    install_and_run, install_and_test = lines[1], lines[2]
    for line in (install_and_run, install_and_test):
        assert "pip install -c constraints.txt" in line  # torch pinned to the CPU wheel in every install
    assert "acgan " in install_and_run and install_and_test.endswith("python -m pytest")
    assert "apt-get install -y -qq kubectl" in install_and_test  # tests/deploy renders the manifests with it


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "sed -n '3p' README.md" in script and 'bash -c "$test_command"' in script
    line = subprocess.run(["sed", "-n", "3p", str(ROOT / "README.md")], capture_output=True, text=True).stdout.strip()
    assert line == (ROOT / "README.md").read_text().splitlines()[2]
