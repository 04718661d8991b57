"""images/Dockerfile: parsed (no Docker engine here) and checked for what operators rely on."""

import tomllib
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


def parse() -> tuple[DockerfileParser, list[dict]]:
    parser = DockerfileParser(path=str(ROOT / "images" / "Dockerfile"))
    return parser, [i for i in parser.structure if i["instruction"] != "COMMENT"]


def test_multi_stage_on_debians_official_image_with_the_stand_ins_release():
    """The base is an image that exists (Debian's official one), of the release the image check's stand-in base is
    made of (tests/deploy/image_check.py), so what the check runs is what a cluster pulls, torch's wheel aside."""
    from tests.deploy.image_check import DEBIAN_RELEASE

    parser, instructions = parse()
    assert parser.is_multistage
    stages = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert stages == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE} AS runtime"]
    assert set(parser.parent_images) == {f"debian:{DEBIAN_RELEASE}-slim"}


def test_the_build_context_is_the_sources_only():
    """.dockerignore: everything is left out but what the Dockerfile copies, and never a credentials file."""
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*" and "**/*.env" in patterns
    copied = {source.rstrip("/") for i in parse()[1] if i["instruction"] == "COPY" and "--from" not in i["value"]
              for source in i["value"].split()[:-1]}
    assert {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")} == copied


def test_installs_with_the_constraints_and_runs_as_non_root():
    _, instructions = parse()
    runtime = instructions[[i["instruction"] for i in instructions].index("FROM", 2):]
    installs = [i["value"] for i in instructions if i["instruction"] == "RUN" and "pip install" in i["value"]]
    assert installs and all("-c constraints.txt" in cmd for cmd in installs)
    assert not any("pip install" in i["value"] for i in runtime if i["instruction"] == "RUN")
    (user,) = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert int(user.split(":")[0]) >= 1000
    assert [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"] == ['["acgan"]']
    copied = [i["value"] for i in instructions if i["instruction"] == "COPY"]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:  # every package pyproject.toml installs is in the image
        assert any(c.startswith(package.rstrip("*") + " ") for c in copied), package



def test_the_runtime_stage_installs_what_compiling_and_https_need():
    """The base has none of them (debian:bookworm-slim: the image check's minbase stand-in, which runs training with
    torch.compile and the store over https in the built image). torch.compile: Inductor's C++ kernels need g++ and
    Python.h (python3-dev), Triton's launcher gcc and Python.h; the store's client verifies https with the system's
    CA bundle (ca-certificates)."""
    _, instructions = parse()
    runtime = instructions[[i["instruction"] for i in instructions].index("FROM", 2):]
    installed = {word for i in runtime if i["instruction"] == "RUN" and "apt-get install" in i["value"]
                 for word in i["value"].split("apt-get install", 1)[1].split("&&")[0].split()
                 if not word.startswith("-")}
    assert {"python3", "python3-dev", "gcc", "g++", "libc6-dev", "ca-certificates"} <= installed, installed
