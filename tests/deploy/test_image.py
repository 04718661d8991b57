"""images/Dockerfile: parsed (no Docker engine here) and checked for what operators rely on."""

import re
import tomllib
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


def parse() -> tuple[DockerfileParser, list[dict]]:
    parser = DockerfileParser(path=str(ROOT / "images" / "Dockerfile"))
    return parser, [i for i in parser.structure if i["instruction"] != "COMMENT"]


def test_multi_stage_on_the_official_cuda_pytorch_image_with_the_pinned_torch():
    parser, instructions = parse()
    assert parser.is_multistage
    stages = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert stages == ["${PYTORCH_IMAGE} AS builder", "${PYTORCH_IMAGE} AS runtime"]
    (base,) = set(parser.parent_images)
    repo, tag = base.split(":")
    assert repo == "pytorch/pytorch" and "cuda" in tag
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert tag.startswith(f"{pinned}-")  # pip keeps the base's CUDA torch instead of pulling another


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

