"""Which nodes an ``ignored`` section names (POT's scope and operations, NNCF's names, patterns and types
as :mod:`ovquant.nncf_compat` translates them), and what is done with an entry that names none."""
import re

import openvino as ov

from ovquant.errors import ConfigError
from ovquant.graph import Graph


def resolve_ignored(graph: Graph, ignored, extra_types=()) -> tuple:
    """(set of ignored node names, list of config entries that matched nothing).

    A scope entry matches a node name exactly, or as a regular expression matching the whole name; a
    ``patterns`` entry is a regular expression matched at the start of the name (NNCF's ``re.match``).
    An operations entry matches the op type (virtual types included) and every given attribute.
    """
    names = {n.get_friendly_name() for n in graph.nodes()}
    bodies = [Graph(b) for b in _bodies(graph.model)]   # quantized with the same scope (core/bodies.py)
    inner = {n.get_friendly_name() for b in bodies for n in b.nodes()}   # so their names count as matched
    out, unmatched = set(), []
    for i, s in enumerate(ignored.scope):
        try:
            pat = re.compile(s)
        except re.error:
            pat = None
        match = (lambda n: n == s or pat is not None and pat.fullmatch(n) is not None)
        hits = {s} & names or {n for n in names if match(n)}   # an exact name, else the regex
        if not hits and not any(match(n) for n in inner):
            unmatched.append(f"ignored.scope[{i}] {s!r}")
        out |= hits
    for i, p in enumerate(getattr(ignored, "patterns", ())):
        pat = re.compile(p)
        hits = {n for n in names if pat.match(n)}
        if not hits and not any(pat.match(n) for n in inner):
            unmatched.append(f"ignored.patterns[{i}] {p!r}")
        out |= hits
    for i, op in enumerate(ignored.operations):
        hits = {n.get_friendly_name() for n in graph.find(types=op.type, attributes=op.attributes or None)}
        if not hits and not any(b.find(types=op.type, attributes=op.attributes or None) for b in bodies):
            unmatched.append(f"ignored.operations[{i}] type {op.type!r}" + (f" with {op.attributes}" if op.attributes else ""))
        out |= hits
    for t in extra_types:
        out |= {n.get_friendly_name() for n in graph.find(types=t)}
    return out, unmatched


def _bodies(model: ov.Model) -> list:
    """The If bodies of ``model``, at any depth."""
    out = []
    for n in model.get_ordered_ops():
        if n.get_type_name() == "If":
            for body in (n.get_function(0), n.get_function(1)):
                out += [body] + _bodies(body)
    return out


def check_unmatched(unmatched: list, strict: bool, warn, validate: bool = False) -> None:
    """The entries that matched nothing: a ConfigError with ``strict`` (``--strict``) or ``validate``
    (``ignored.validate``, NNCF's ``IgnoredScope(validate=True)``), else a warning."""
    if not unmatched:
        return
    msg = "; ".join(unmatched) + " matched no node"
    if validate and not strict:
        raise ConfigError(f"{msg} (ignored scope validate=True; validate=False makes this a warning)")
    if strict:
        raise ConfigError(msg)
    warn(msg)
