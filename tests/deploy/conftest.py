"""manifests/ rendered as an operator applies it: each overlay as committed, each with every component uncommented
the way its comment says, and the cluster-scoped kustomizations, built with `kubectl kustomize` from a copy whose
untracked env files come from the committed examples."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _listed(folder: str) -> list[str]:
    return sorted(p.name for p in (MANIFESTS / folder).iterdir()) if (MANIFESTS / folder).is_dir() else []


OVERLAYS, COMPONENTS, CLUSTER = _listed("overlays"), _listed("components"), _listed("cluster")
# The two store components replace the same endpoint: an operator picks one, so no build holds both.
COMBINED = [c for c in COMPONENTS if c != "bundled-minio"]
COMMENTED = re.compile(r"^#   - \.\./\.\./components/(?P<name>[\w-]+)", re.M)


def commented_components(overlay: str) -> list[str]:
    """The components an overlay's kustomization offers, commented out as committed."""
    return COMMENTED.findall((MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text())


def uncomment(kustomization: Path, components: list[str]) -> None:
    """What the overlay's comment tells an operator to do: uncomment `components:` and the chosen entries."""
    text = kustomization.read_text()
    text = text.replace("\n# components:\n", "\ncomponents:\n")
    for name in components:
        text = text.replace(f"\n#   - ../../components/{name}", f"\n  - ../../components/{name}")
    kustomization.write_text(text)


def builds() -> dict[str, tuple[str, list[str]]]:
    """Build name -> (directory under manifests/, components uncommented)."""
    out = {}
    for overlay in OVERLAYS:
        out[overlay] = (f"overlays/{overlay}", [])
        for component in COMPONENTS:
            out[f"{overlay}+{component}"] = (f"overlays/{overlay}", [component])
        out[f"{overlay}+{'+'.join(COMBINED)}"] = (f"overlays/{overlay}", COMBINED)
    for name in CLUSTER:
        out[f"cluster/{name}"] = (f"cluster/{name}", [])
    return out


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed: the README's test command installs it (a kubectl >= 1.27, whose "
                    "kustomize understands `labels` and components)")
    out = {}
    for i, (name, (directory, components)) in enumerate(builds().items()):
        root = tmp_path_factory.mktemp(f"manifests-{i}") / "manifests"
        shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("*.env"))
        for example in root.rglob("*.env.example"):
            shutil.copy(example, example.with_suffix(""))
        uncomment(root / directory / "kustomization.yaml", components)
        built = subprocess.run(["kubectl", "kustomize", str(root / directory)], capture_output=True, text=True,
                               check=False)
        assert built.returncode == 0, f"kubectl kustomize {directory} with {components}: {built.stderr}"
        out[name] = [d for d in yaml.safe_load_all(built.stdout) if d]
    return out


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def overlay_namespace(overlay: str) -> str:
    """The namespace an overlay sets on everything it applies."""
    return yaml.safe_load((MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text())["namespace"]
