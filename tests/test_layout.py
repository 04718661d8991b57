"""The layout's rule, read from the source with ast: imports run one way, acgan <- components <- pipelines <- acgan_cli
(a package imports only those left of it and itself), and the library's parts (its folders and modules) import each
other without a cycle. Imports inside functions count: they are where a back-import hides."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("acgan", "components", "pipelines", "acgan_cli")  # each may import those before it, never those after


def imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it; `from a import b` counts as a and a.b (b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def back_imports(root: Path) -> list[str]:
    found = []
    for layer, package in enumerate(LAYERS):
        for path in sorted((root / package).rglob("*.py")):
            above = {name.split(".")[0] for name in imported(path)} & set(LAYERS[layer + 1:])
            found += [f"{path.relative_to(root)} imports {top}, which is above {package}" for top in sorted(above)]
    return found


def library_parts(root: Path) -> dict[str, set[str]]:
    """acgan's parts (a folder, or a module at its top) -> the other parts each imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / "acgan").rglob("*.py")):
        part = path.relative_to(root / "acgan").parts[0].removesuffix(".py")
        for name in imported(path):
            top, _, rest = name.partition(".")
            other = rest.split(".")[0]
            is_part = (root / "acgan" / other).is_dir() or (root / "acgan" / f"{other}.py").is_file()
            if top == "acgan" and other and other != part and is_part:
                graph.setdefault(part, set()).add(other)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle through the graph's nodes (first node repeated at the end), or None."""
    state: dict[str, str] = {}  # node -> "open" while on the current path, "done" once every path from it is seen

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def benchmark_modules(root: Path) -> dict[str, set[str]]:
    """acgan_cli/benchmarks' modules -> the others of them each imports (`acgan bench`'s suite and its parts)."""
    folder = root / "acgan_cli" / "benchmarks"
    graph: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        for name in imported(path):
            other = name.removeprefix("acgan_cli.benchmarks.").split(".")[0]
            if name.startswith("acgan_cli.benchmarks.") and other != path.stem and (folder / f"{other}.py").is_file():
                graph.setdefault(path.stem, set()).add(other)
    return graph


def test_imports_run_one_way():
    assert back_imports(ROOT) == []


def test_the_library_parts_import_each_other_without_a_cycle():
    assert cycle(library_parts(ROOT)) is None


def test_the_benchmarks_import_each_other_without_a_cycle():
    assert cycle(benchmark_modules(ROOT)) is None


def test_a_planted_back_import_and_cycle_are_found(tmp_path):
    """The checks above on a small tree with the two faults this layout removed: a command-line import inside a
    library function, and metrics -> sampling -> training -> metrics; and a benchmark module that imports the suite
    which imports it."""
    files = {"acgan/metrics/__init__.py": "from acgan.sampling import to_uint8\n",
             "acgan/sampling.py": "from acgan.training import state\n",
             "acgan/training/state.py": "def f():\n    from acgan import metrics\n",
             "acgan/training/__init__.py": "",
             "components/__init__.py": "import acgan.sampling\n",
             "pipelines/runs.py": "from components import run_step\n",
             "acgan_cli/main.py": "from pipelines.runs import rerun\n",
             "acgan/store.py": "def f():\n    from acgan_cli.main import main\n",
             "acgan_cli/benchmarks/suite.py": "from acgan_cli.benchmarks.machine import Row\n",
             "acgan_cli/benchmarks/machine.py": "def f():\n    from acgan_cli.benchmarks import suite\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert back_imports(tmp_path) == ["acgan/store.py imports acgan_cli, which is above acgan"]
    assert cycle(library_parts(tmp_path)) == ["metrics", "sampling", "training", "metrics"]
    assert cycle(benchmark_modules(tmp_path)) == ["machine", "suite", "machine"]


def test_every_file_beside_the_code_is_installed_with_it():
    """The image installs the project as a wheel (images/Dockerfile), which holds a package's other files only as
    pyproject.toml's package-data names them: the report's and the gallery's templates."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and path.suffix not in (".py", ".pyc"):
                folder = path.parent.relative_to(ROOT).as_posix().replace("/", ".")
                assert path.name in declared.get(folder, []), f"{path.relative_to(ROOT)} is not package data"


def imports_of(part: str) -> set[str]:
    """The acgan parts that one part (a folder, or a module at acgan's top) imports, anywhere in it."""
    return library_parts(ROOT).get(part, set())


def test_floors_held_by_no_constant():
    """Sampling and the collapse alarm sit below training (the snapshot's files are acgan/snapshot.py's, the stats
    reader acgan/stats.py's); the model server below the evaluation (its one key is acgan/layout.py's)."""
    assert "training" not in imports_of("sampling")
    assert "training" not in imports_of("collapse")
    assert "evaluation" not in imports_of("serving")


def test_importing_the_model_loads_no_storage_code():
    """The model knows nothing of storage: its settings take the URI rules from acgan/uri.py, not the store."""
    import subprocess
    import sys

    code = "import sys, acgan.model; print(sorted(m for m in ('acgan.store', 'minio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
