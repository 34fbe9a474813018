"""The public API is importable from the top level and layering holds (lower never imports higher)."""

import ast
import pathlib

import lazyrich

SRC = pathlib.Path(lazyrich.__file__).parent
ORDER = ["ntk", "theory", "models", "data", "dynamics", "experiments", "plots", "sweep", "cli"]
RANK = {"ntk": 0, "theory": 1, "models": 2, "data": 2, "dynamics": 3, "experiments": 4, "plots": 5, "sweep": 5, "cli": 5, "demo": 6}


def test_every_export_resolves():
    for name in lazyrich.__all__:
        assert getattr(lazyrich, name) is not None, name


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and node.module is None:
                continue
            if node.level == 1:
                yield path.parent.relative_to(SRC).parts[:1] and (path.parent.relative_to(SRC).parts[0],) or ()
            elif node.module and node.module.startswith("lazyrich."):
                yield (node.module.split(".")[1],)
            elif node.level == 2 and node.module:
                yield (node.module.split(".")[0],)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("lazyrich."):
                    yield (a.name.split(".")[1],)


def test_lower_layers_never_import_higher_ones():
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).parts
        layer = rel[0] if len(rel) > 1 else rel[0][:-3]
        if layer not in RANK:
            continue
        for imp in _imports(path):
            if imp and imp[0] in RANK and RANK[imp[0]] > RANK[layer]:
                violations.append(f"{path.relative_to(SRC)} imports lazyrich.{imp[0]}")
    assert not violations, violations
