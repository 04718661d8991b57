"""The layout's rules, read from the source with ast: imports run one way, acgan <- components <- pipelines <- acgan_cli
(a package imports only those left of it and itself), and the library's parts (its folders and modules) import each
other without a cycle. Imports inside functions count: they are where a back-import hides. And tests/ mirrors the
tree: each test file is named after the module it tests, at the mirrored path."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("acgan", "components", "pipelines", "acgan_cli")  # each may import those before it, never those after
TEST_THEMES = ("faults", "deploy", "backend")  # tests/ folders of behaviour across modules (docs/design.md, Layout)
CROSS_CUTTING = {  # tests/ files named after no module
    "test_layout.py",  # this file: rules over the whole tree
    "test_readme.py",  # the README and docs/
    "test_printed_commands.py",  # every command a message of any module advises
    "test_gpu_check.py",  # bench/gpu-check.sh, a script
    "test_layout_module.py",  # acgan/layout.py: test_layout.py is this file
    "training/test_tac.py",  # TAC-GAN's objective through the model, the losses, the step and the checkpoints
    "serving/test_clients.py",  # the server through clients nobody here wrote (tritonclient, kserve)
    "serving/test_load.py",  # the server under load
    "serving/test_serve_command.py",  # `acgan serve` as a person starts and stops it
}


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


def mirrored(test: Path) -> list[Path]:
    """Where the module a test file (a path under tests/) is named after would be: tests/<folders>/test_X.py tests
    X.py or the package X/ under acgan/<folders>, or under <folders> where the first is a layer above acgan
    (tests/pipelines/test_runs.py: pipelines/runs.py)."""
    *folders, name = test.parts
    module = name.removeprefix("test_").removesuffix(".py")
    base = Path(*folders) if folders and folders[0] in LAYERS[1:] else Path("acgan", *folders)
    return [base / f"{module}.py", base / module / "__init__.py"]


def unmirrored_tests(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        test = path.relative_to(root / "tests")
        if test.parts[0] in TEST_THEMES or test.as_posix() in CROSS_CUTTING:
            continue
        if not any((root / module).is_file() for module in mirrored(test)):
            found.append(f"tests/{test.as_posix()} is named after no module: there is no {mirrored(test)[0]}")
    return found


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


def test_the_tests_mirror_the_tree():
    assert unmirrored_tests(ROOT) == []


def test_a_test_named_after_no_module_is_found(tmp_path):
    """Each kind of place a test file may be: a module at acgan's top, in a folder of it, a package, a module of a
    layer above acgan, a theme folder, a cross-cutting file; and two named after modules that are not there."""
    for name in ("acgan/store.py", "acgan/data/plan.py", "acgan/evaluation/__init__.py", "pipelines/runs.py",
                 "tests/test_store.py", "tests/data/test_plan.py", "tests/test_evaluation.py",
                 "tests/pipelines/test_runs.py", "tests/faults/test_kill.py", "tests/test_readme.py",
                 "tests/test_stores.py", "tests/pipelines/test_plan.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert unmirrored_tests(tmp_path) == [
        "tests/pipelines/test_plan.py is named after no module: there is no pipelines/plan.py",
        "tests/test_stores.py is named after no module: there is no acgan/stores.py"]


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
