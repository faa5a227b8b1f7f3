"""Core names no built-in plugin: a scan of core/*.py with ``ast``.

The names come from the live plugin registry (every algorithm, estimator and aggregator a built-in
plugin module registers), so a new built-in is covered without editing this test. A name counts where it
is a string constant outside a docstring, or an identifier (a variable, attribute, function, class,
argument or imported name). Identifiers that are single lower-case words (``min``, ``max``, ``mean``,
``median``) are also Python builtins and numpy functions, so for those only string constants count.

Core may still use a word that is also a plugin's name where it means something of core's own; each such
use is listed in ``HOMONYMS`` with what it means there.
"""
import ast
import os

import pytest

from ovquant.registry import get_registry

CORE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "core")
KINDS = ("algorithms", "estimators", "aggregators")

#: (module, top-level function/class/assignment, string) -> what the word means there (not a plugin)
HOMONYMS = {
    ("statistics.py", "SIDES", "min"): "a border of a range (POT's range_estimator.min / .max)",
    ("statistics.py", "SIDES", "max"): "a border of a range (POT's range_estimator.min / .max)",
    ("statistics.py", "Estimator", "max"): "the border an estimator serves by default (its ``side``)",
    ("statistics.py", "_REDUCE_OPS", "min"): "OpenVINO's ReduceMin, a reduction estimators share",
    ("statistics.py", "_REDUCE_OPS", "max"): "OpenVINO's ReduceMax, a reduction estimators share",
    ("statistics.py", "_REDUCE_OPS", "mean"): "OpenVINO's ReduceMean, a reduction estimators share",
    ("statistics.py", "reduce_op", "min"): "OpenVINO's ReduceMin, a reduction estimators share",
    ("statistics.py", "reduce_op", "max"): "OpenVINO's ReduceMax, a reduction estimators share",
    ("statistics.py", "reduce_op", "mean"): "OpenVINO's ReduceMean, a reduction estimators share",
    ("graph.py", "is_nonnegative", "min"): "the attribute of OpenVINO's Clamp op",
    ("demo.py", "load_demo", "mean"): "a key of the shipped demo data file",
    ("histogram.py", "_merge", "min"): "a key of the report's activation histogram",
    ("histogram.py", "_merge", "max"): "a key of the report's activation histogram",
}


def _builtin_names() -> dict:
    """name -> kind, for everything a module of ``ovquant.plugins`` registers."""
    reg = get_registry()
    out = {}
    for kind in KINDS:
        for entry in reg.entries[kind].values():
            if entry.plugin.startswith("ovquant.plugins."):
                out[entry.name] = kind
    return out


def _docstring_nodes(tree: ast.AST) -> set:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
        # a string alone as a statement (an attribute's doc string) is documentation too
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            ids.add(id(node.value))
    return ids


def _identifiers(node: ast.AST):
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, ast.arg):
        yield node.arg
    elif isinstance(node, ast.keyword) and node.arg:
        yield node.arg
    elif isinstance(node, ast.alias):
        yield node.asname or node.name.split(".")[-1]


def _is_word(name: str) -> bool:
    return name.isalpha() and name.islower()


def _top_name(node: ast.AST) -> str:
    """The name a top-level statement defines (a function, a class, an assigned name), or ''."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return next((t.id for t in targets if isinstance(t, ast.Name)), "")


def _strings(tree: ast.AST):
    """(top-level name, string constant node) for every string constant outside a docstring."""
    docs = _docstring_nodes(tree)
    for top in tree.body:
        for node in ast.walk(top):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                yield _top_name(top), node


def _parse(fname: str) -> ast.AST:
    with open(os.path.join(CORE, fname), encoding="utf-8") as f:
        return ast.parse(f.read(), fname)


def core_mentions(names: dict) -> list:
    """(file, line, name, how) for every mention of a built-in plugin's name in core outside docstrings."""
    found = []
    for fname in sorted(f for f in os.listdir(CORE) if f.endswith(".py")):
        tree = _parse(fname)
        for top, node in _strings(tree):
            if node.value in names and (fname, top, node.value) not in HOMONYMS:
                found.append((fname, node.lineno, node.value, "string"))
        for node in ast.walk(tree):
            for ident in _identifiers(node):
                if ident in names and not _is_word(ident):
                    found.append((fname, getattr(node, "lineno", 0), ident, "identifier"))
    return found


def test_registry_lists_the_builtins():
    names = _builtin_names()
    # the scan is only as good as its list: it must hold the built-ins of each kind
    for kind in KINDS:
        assert any(k == kind for k in names.values()), kind
    assert "DefaultQuantization" in names and "MinMaxQuantization" in names


def test_core_names_no_builtin_plugin():
    found = core_mentions(_builtin_names())
    assert not found, "core names built-in plugins:\n" + "\n".join(f"core/{f}:{l}: {n!r} ({how})"
                                                                  for f, l, n, how in found)


def test_homonyms_are_still_used():
    """An entry of HOMONYMS that core no longer needs is removed (the list stays the truth)."""
    used = {(fname, top, node.value) for fname in {f for f, _, _ in HOMONYMS} for top, node in _strings(_parse(fname))}
    assert set(HOMONYMS) <= used, set(HOMONYMS) - used


def test_scanner_finds_a_mention():
    """The scan itself: a string constant and an identifier are found, a docstring is not."""
    tree = ast.parse('"""MinMaxQuantization in a docstring."""\nA = "MinMaxQuantization"\nabs_max = 1\n'
                     'def f():\n    """mse_range."""\n    return "quantile"\n')
    strings = [(top, n.value) for top, n in _strings(tree)]
    idents = [i for n in ast.walk(tree) for i in _identifiers(n)]
    assert strings == [("A", "MinMaxQuantization"), ("f", "quantile")] and "abs_max" in idents


def test_core_imports_nothing_from_plugins():
    """Core imports nothing from ``ovquant.plugins``; the registry imports the package itself (never a module
    of it) to walk it for the built-ins, the one place core knows where they live."""
    bad = []
    for fname in sorted(os.listdir(CORE)):
        if not fname.endswith(".py"):
            continue
        with open(os.path.join(CORE, fname), encoding="utf-8") as f:
            tree = ast.parse(f.read(), fname)
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [("." * node.level) + (node.module or "")]
                mods += [f"{mods[0]}.{a.name}" for a in node.names]
            for m in mods:
                if (fname, m) == ("registry.py", "ovquant.plugins"):
                    continue
                if m.startswith("ovquant.plugins") or m.startswith(".plugins") or m.startswith("plugins"):
                    bad.append(f"core/{fname}:{node.lineno}: {m}")
    assert not bad, bad
