"""No import circles between lazyrich's modules (issue 13, section 4).

The import graph is read from the source with ``ast``; a circle is a strongly connected component with more than
one module.  Two graphs: the load-time one (imports executed when a module is imported) must have no circle at
all; the full one (also imports inside functions, so a lazy import that closes a circle counts) must have only the
circles listed in ``KNOWN_LAZY_CIRCLES``.
"""

import ast
import pathlib

import lazyrich

SRC = pathlib.Path(lazyrich.__file__).parent

#: Lazy (function-level) circles left as they are: ``plots.report`` looks figure functions up by name on the
#: ``lazyrich.plots`` package, which imports ``report``.  Remove an entry once its circle is gone.
KNOWN_LAZY_CIRCLES = [["lazyrich.plots", "lazyrich.plots.report"]]


def _module_names():
    names = {}
    for path in SRC.rglob("*.py"):
        parts = ("lazyrich",) + path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _import_nodes(tree, lazy):
    """Import statements of ``tree``; without ``lazy``, only those run at import time (not inside a function)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if lazy or not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                todo.append(child)


def _edges(name, path, modules, lazy):
    is_pkg = path.name == "__init__.py"
    pkg = name if is_pkg else name.rpartition(".")[0]
    for node in _import_nodes(ast.parse(path.read_text()), lazy):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # ``import lazyrich.a.b`` -> the deepest module that exists
                t = t.rpartition(".")[0]
            if t and t != name:
                yield t


def _graph(lazy=True):
    modules = _module_names()
    return {name: set(_edges(name, path, modules, lazy)) for name, path in modules.items()}


def _circles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_circle_finder_finds_a_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(g) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_lazy_and_package_imports():
    g, eager = _graph(), _graph(lazy=False)
    assert "lazyrich.dynamics.losses" in g["lazyrich.dynamics.train"]  # from .losses import ...
    assert "lazyrich.ntk" in g["lazyrich.dynamics.tracker"]  # from lazyrich.ntk import empirical_ntk
    assert "lazyrich.data.base" in eager["lazyrich.data.mnist1d"]
    assert "lazyrich.plots" in g["lazyrich.plots.report"]  # import inside a function ...
    assert "lazyrich.plots" not in eager["lazyrich.plots.report"]  # ... is not a load-time import


def test_no_load_time_import_circles_in_lazyrich():
    assert _circles(_graph(lazy=False)) == []


def test_lazy_imports_close_only_the_known_circles():
    assert sorted(_circles(_graph())) == sorted(KNOWN_LAZY_CIRCLES)


def test_train_and_tracker_do_not_import_each_other():
    g = _graph()
    assert "lazyrich.dynamics.tracker" not in g["lazyrich.dynamics.train"]
    assert "lazyrich.dynamics.train" not in g["lazyrich.dynamics.tracker"]
