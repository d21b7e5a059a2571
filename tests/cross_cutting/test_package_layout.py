"""The package's shape, as a newcomer relies on it: folders in data-flow order whose imports only go down
(no cycle, no floor importing one above it), small folders and modules, and the modules a command
needs without TensorFlow free of it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hist2rna_tf

PACKAGE = Path(hist2rna_tf.__file__).parent
# The floors, lowest first: a module imports from its own floor and the ones below, never above.
# (analysis/ is statistics on tables: model/ scores its runs with it; report/ renders both. spots/ reads spatial
# transcriptomics samples and runs HEST-Benchmark's probe on their embeddings; spot_run/ trains model/'s heads
# on spots.)
FLOORS = ("base", "extract", "analysis", "spots", "model", "spot_run", "report", "demo", "api", "cli")
# The package's face for a notebook (its __init__ and api.py) stands above the floors it calls.
API = ("hist2rna_tf", "hist2rna_tf.api")
MAX_MODULES_PER_FOLDER, MAX_LINES_PER_MODULE = 10, 400


def _modules() -> dict[str, Path]:
    return {".".join(("hist2rna_tf", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): path
            for path in PACKAGE.rglob("*.py")}


def _floor(module: str) -> str:
    if module in API:
        return "api"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "base"


def _imports(path: Path) -> set[str]:
    """The hist2rna_tf modules `path` imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: a relative import; the package imports absolutely (hist2rna_tf....)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hist2rna_tf"):
            modules = _modules()
            for alias in node.names:  # `from hist2rna_tf.model import runs` imports the module runs
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("hist2rna_tf"))
    return {m for m in found if m != "hist2rna_tf"}


def test_imports_only_go_down_the_floors():
    upward = []
    for module, path in _modules().items():
        for imported in _imports(path):
            if FLOORS.index(_floor(imported)) > FLOORS.index(_floor(module)):
                upward.append(f"{module} ({_floor(module)}) imports {imported} ({_floor(imported)})")
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = {module: _imports(path) & set(_modules()) for module, path in _modules().items()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", " -> ".join([*trail, module])
        state[module] = "open"
        for imported in sorted(graph[module]):
            if not imported.startswith(module + "."):  # a package's own modules are not a cycle of it
                visit(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_folders_and_modules_stay_small():
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    crowded = {str(f.relative_to(PACKAGE)): n for f in folders
               if (n := len([p for p in f.glob("*.py") if not p.name.startswith("__")])) > MAX_MODULES_PER_FOLDER}
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES_PER_MODULE}
    assert crowded == {} and long == {}


def test_the_floors_read_as_the_data_flow():
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == sorted(
        floor for floor in FLOORS[1:] if floor != "api")
    base = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.name.startswith("__") and p.stem != "api")
    assert base == ["arguments", "atomic", "barcodes", "config", "errors", "expression", "outputs", "progress", "tfenv"]


def test_what_needs_no_tensorflow_does_not_import_it():
    """The report, the run folder, the feature settings, the statistics and the command line's parser
    load without TensorFlow (seconds to import): `hist2rna report` and `--help` stay quick."""
    light = ["hist2rna_tf.cli", "hist2rna_tf.report.report", "hist2rna_tf.model.runs", "hist2rna_tf.extract.settings",
             "hist2rna_tf.extract.backbones.catalog", "hist2rna_tf.extract.slides", "hist2rna_tf.extract.regions",
             "hist2rna_tf.extract.claims", "hist2rna_tf.analysis.clinical", "hist2rna_tf.analysis.subtype",
             "hist2rna_tf.analysis.survival", "hist2rna_tf.model.costs", "hist2rna_tf.demo.cohort",
             "hist2rna_tf.model.folds", "hist2rna_tf.report.crossval", "hist2rna_tf.report.qupath", "hist2rna_tf.api"]
    code = f"import importlib, sys\nfor m in {light!r}: importlib.import_module(m)\n" \
           "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\nassert not heavy, heavy\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_architecture_page_names_every_module_and_only_modules_that_are_there():
    """docs/architecture.md's table of modules (a row a module, or a folder's modules in one row) is true
    to the code: a module added is named there, a module moved or removed leaves no row behind."""
    import re

    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|", page, re.MULTILINE)
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    unnamed = [m for m in modules if m not in rows and not any(m.startswith(r) for r in rows if r.endswith("/"))]
    assert unnamed == [] and [r for r in rows if not (PACKAGE / r).exists()] == []


def test_a_floors_subfolder_imports_nothing_of_the_floor_and_no_module_imports_private_names():
    """model/heads/ holds heads and model/inputs/ what they read (extract/backbones/ the encoders,
    extract/stain/ the normalisers): the floor's own modules use them, never the reverse (a loop at folder
    level that the floors cannot see). And a module imports no other module's private (_underscored)
    names: what is shared is public where it is used."""
    modules = _modules()
    back_up, private = [], []
    for module, path in modules.items():
        folder = path.parent
        floor = folder.parent if folder.parent.parent == PACKAGE else None  # a floor's subfolder: its floor
        above = {m for m, p in modules.items() if p.parent == floor}
        back_up += [f"{module} imports {m}" for m in sorted(_imports(path) & above)]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hist2rna_tf"):
                private += [f"{module} imports {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert back_up == [] and private == []
