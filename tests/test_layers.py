"""
The house by layer, kept so: every import in ``tradebot/`` (read with `ast`,
those inside functions too) points down the layers, no modules import each
other in a circle, and no module is longer than `MAX_LINES` without saying
why at its top. docs/architecture.md draws the same map and names every module.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tradebot"

#: (rank, layer, module prefixes): a module may import its own layer and the
#: layers of a lower rank, nothing else.
LAYERS = [
    (0, "the broker interface", ("tradebot.broker",)),
    (0, "plans", ("tradebot.plans",)),
    (1, "signals", ("tradebot.signals",)),
    (1, "store", ("tradebot.store",)),
    (2, "brokers", ("tradebot.brokers",)),
    (3, "trading", ("tradebot.trading", "tradebot.loops")),
    (4, "server", ("tradebot.server", "tradebot.protocol")),
    (4, "backtest", ("tradebot.backtest",)),
    (5, "the admin command", ("tradebot.cli", "tradebot.__main__")),
]
MAX_LINES = 400
#: What a module longer than `MAX_LINES` says at its top, with its reason.
LONG_BECAUSE = "Longer than 400 lines because"


def modules():
    """module name -> path, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def layer_of(module):
    for rank, name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank, name
    return 0, "the package" if module == "tradebot" else None


def imports(module):
    """The package's modules that `module` imports (anywhere in it)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "tradebot":
                continue
            while name not in MODULES:  # an attribute of a module, not a module
                name = name.rpartition(".")[0]
            if name != module and name != "tradebot":
                found.add(name)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if layer_of(m)[1] is None] == []


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in GRAPH.items():
        rank, layer = layer_of(module)
        for target in sorted(targets):
            target_rank, target_layer = layer_of(target)
            if target_layer != layer and target_rank >= rank:
                upward.append(f"{module} ({layer}) imports {target} ({target_layer})")
    assert upward == []


def test_no_modules_import_each_other_in_a_circle():
    cycles = []
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_broker_interface_imports_no_broker():
    assert GRAPH["tradebot.broker"] == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_long_without_saying_why(module):
    text = MODULES[module].read_text()
    lines = text.count("\n")
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(text)) or ""
        assert LONG_BECAUSE in docstring, f"{module}: {lines} lines and no '{LONG_BECAUSE} ...' at its top"


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _documented(module, doc):
    """Whether docs/architecture.md's module map names `module`: by its path
    (``plans/files.py``), or as ```name``` in the row of its package
    (``brokers/paper/``)."""
    path = MODULES[module].relative_to(PACKAGE).as_posix()
    if path == "__init__.py" or "/migrations/" in path:
        return True
    folder, _, name = path.rpartition("/")
    named = {f"`{path}`", f"`tradebot/{path}`"}
    if name == "__init__.py":
        named |= {f"`{folder}/`", f"`tradebot/{folder}/`"}
    if any(n in doc for n in named):
        return True
    rows = [line for line in doc.splitlines() if f"`{folder}/`" in line]
    return any(f"`{name[:-3]}`" in row or f"`{name}`" in row for row in rows)


def test_the_architecture_doc_names_every_module_and_layer():
    doc = ARCHITECTURE.read_text()
    assert [m for m in sorted(MODULES) if not _documented(m, doc)] == []
    for rank, name, prefixes in LAYERS:
        for prefix in prefixes:
            path = MODULES[prefix].relative_to(PACKAGE.parent).as_posix()
            shown = path[: -len("/__init__.py")] + "/" if path.endswith("__init__.py") else path
            assert f"| {rank} | `{shown}`" in doc or f", `{shown}` |" in doc, shown
