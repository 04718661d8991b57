"""The README's first lines are the two set-up commands, and CI runs the second one; its dependency list matches
pyproject.toml; no link or path in the README or docs/ leads outside the repository."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CHECK = ".venv/bin/python -m tests.deploy.image_check"  # after the suite, in the environment it installed


def test_readme_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    install_and_run, install_and_test = lines[1], lines[2]
    for line in (install_and_run, install_and_test):
        assert re.search(r"pip install (-q )?-c constraints\.txt", line)  # torch: the CPU wheel, in every install
    assert "acgan " in install_and_run and install_and_test.endswith("python -m pytest")
    assert "apt-get install -y -qq kubectl chromium" in install_and_test  # tests/deploy renders the manifests with
    # kubectl; tests/pipelines opens the HTML report in headless Chromium


def _ci_run(tmp_path: Path, readme: str) -> subprocess.CompletedProcess:
    """.ci/run as written, beside `readme`, with its steps echoing what they would run instead of running the suite
    and the image check."""
    script = (ROOT / ".ci" / "run").read_text()
    runs = 'bash -c "$test_command"'
    assert script.count(runs) == 1 and script.count(f"\n{IMAGE_CHECK}\n") == 1
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text(script.replace(runs, 'echo "would run: $test_command"').replace(
        f"\n{IMAGE_CHECK}\n", '\necho "would check the image"\n'))
    (tmp_path / "README.md").write_text(readme)
    return subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=30)


def test_ci_runs_the_readme_test_command(tmp_path):
    readme = (ROOT / "README.md").read_text()
    install_and_test = readme.splitlines()[2]
    ci = _ci_run(tmp_path, readme)
    assert ci.returncode == 0, ci.stderr
    assert ci.stdout.splitlines() == [f"+ {install_and_test}", f"would run: {install_and_test}", f"+ {IMAGE_CHECK}",
                                      "would check the image"]


def test_ci_refuses_a_readme_whose_third_line_is_not_the_test_command(tmp_path):
    lines = (ROOT / "README.md").read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # the run command where CI expects the test command
    ci = _ci_run(tmp_path, "\n".join(lines) + "\n")
    assert ci.returncode == 1 and "would run" not in ci.stdout
    assert ci.stderr.startswith(".ci/run: README.md line 3 is not the test command: ")


def _dependency_list() -> dict[str, bool]:
    """Every package the README's dependency list names -> whether its entry says it is for tests only."""
    section = (ROOT / "README.md").read_text().partition("## Dependencies")[2]
    named = {}
    for names, note in re.findall(r"^- \*\*([^*]+)\*\*( \(tests only\))?:", section, re.MULTILINE):
        for name in names.split(","):
            named[name.strip()] = bool(note)
    return named


def _package(requirement: str) -> str:
    return re.split(r"[<>=!~ ;]", requirement)[0]  # "moto[server]>=5.0" -> "moto[server]", as the README names it


def test_the_dependency_list_names_every_dependency_where_it_is_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_package(r) for r in project["dependencies"]}
    test_only = {_package(r) for r in project["optional-dependencies"]["test"]}
    assert _dependency_list() == {**{n: False for n in runtime}, **{n: True for n in test_only}}


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`]*`")  # a code span may run over a line break
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[(?!\^)[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_BARE_URL = re.compile(r"<?\b((?:https?|ftp)://[^\s)>]+)|<(mailto:[^>]+)>")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code marks and punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose = _FENCED.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose, re.MULTILINE)}


def _links(path: Path) -> list[str]:
    prose = _CODE_SPAN.sub("", _FENCED.sub("", path.read_text()))
    urls = [url or mail for url, mail in _BARE_URL.findall(prose)]
    return _INLINE_LINK.findall(prose) + _REFERENCE.findall(prose) + urls


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_stays_inside_the_repository(doc):
    for target in _links(doc):
        assert not re.match(r"[a-z][a-z0-9+.-]*:", target), f"{doc.name}: {target} leaves the repository"
        file, _, anchor = target.partition("#")
        resolved = (doc.parent / file).resolve() if file else doc
        assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{doc.name}: {target} is not a file here"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{doc.name}: {target} names no heading of {resolved.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_named_in_the_docs_leads_outside_the_repository(doc):
    """Paths in code marks count too: a reader follows `../shared/PAPER.md` as readily as a link."""
    for path in re.findall(r"(?<![\w.])((?:\.\./)+[\w./-]*)", doc.read_text()):
        assert (doc.parent / path).resolve().is_relative_to(ROOT), f"{doc.name}: {path} is outside the repository"
