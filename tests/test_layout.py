"""The package's layout: subpackages by concern, imports point one way, no torch on the analysis
side (style: subpackages named after their concern, no circles, nothing imports upward)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mdgl_analysis"

LAYERS = [
    # lowest first; a module may import modules of its own layer or of a lower one
    {"tasks", "runtime", "recording.schema", "kernels", "plugins"},
    {"config"},
    {"network"},
    {"rules"},
    {"recording"},
    {"training"},
    {"analysis"},
    {"api", "cli", "__main__", "__init__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def layer_of(module: str) -> int:
    for depth in (2, 1):
        head = ".".join(module.split(".")[:depth])
        for i, layer in enumerate(LAYERS):
            if head in layer:
                return i
    raise AssertionError(f"module {module} belongs to no layer")


def imports_of(path: Path) -> set[str]:
    """Package modules imported anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mdgl_analysis":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("mdgl_analysis."):
                found.add(node.module.removeprefix("mdgl_analysis."))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mdgl_analysis."):
                    found.add(alias.name.removeprefix("mdgl_analysis."))
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str:
    """``a.b.c`` -> the longest prefix that is a module of the package."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    assert len(parts) == 1, f"import of a missing module mdgl_analysis.{name}"
    return "__init__"  # a name defined in the package's __init__ (the version)


GRAPH = {name: {resolve(i) for i in imports_of(path)} - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "__init__"))
def test_nothing_imports_upward(module):
    for target in GRAPH[module]:
        if target == "__init__":  # the version string only
            continue
        assert layer_of(target) <= layer_of(module), f"{module} imports {target} (upward)"


def test_there_are_no_import_circles():
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in GRAPH[node]:
            if nxt == "__init__":
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [])


def test_subpackages_are_named_after_their_concern():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"kernels", "network", "tasks", "rules", "training", "recording", "analysis"}


TORCH_FREE = sorted(
    m
    for m in MODULES
    if m.startswith(("analysis", "kernels"))
    or m in ("recording.readers", "recording.schema", "recording.export", "recording.nwb")
)


def test_the_readers_and_the_analysis_import_no_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    importlib.import_module('mdgl_analysis.' + name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
    assert len(TORCH_FREE) >= 5


@pytest.mark.parametrize("module", [m for m in TORCH_FREE if m.startswith("analysis")])
def test_the_analysis_uses_only_the_record_readers_and_schema(module):
    allowed = {"recording.readers", "recording.schema", "__init__"}
    for target in GRAPH[module]:
        assert target.startswith("analysis") or target in allowed, f"{module} imports {target}"
