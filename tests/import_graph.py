"""The import graph of a package tree as Python will really follow it, for the architecture test.

Every import counts: module level, inside functions, relative ones, and modules loaded by name
(``importlib.import_module("pkg.mod")``, lazy-import tables and entry-point targets
``"pkg.mod:Class"``: any string that names one of our modules). A registry that loads plugins through
entry points gets an edge to every target of its group, so a plugin that imports its own registry
shows up as the circle it is.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

_MODULE_STRING = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+(:[\w.]+)?")


@dataclass
class ImportGraph:
    """Modules (dotted names) and the modules each one imports, with the line that does it."""

    files: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, dict[str, int]] = field(default_factory=dict)  # importer -> {imported: line}

    def add(self, importer: str, imported: str, line: int) -> None:
        if imported != importer and not importer.startswith(imported + "."):
            # An import of one's own parent package is implied by the import system, never a circle of its own.
            self.edges.setdefault(importer, {}).setdefault(imported, line)

    def cycles(self) -> list[list[str]]:
        """Strongly connected components of more than one module (Tarjan, iterative)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        counter = 0
        for root in sorted(self.files):
            if root in index:
                continue
            work = [(root, iter(sorted(self.edges.get(root, {}))))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, children = work[-1]
                child = next(children, None)
                if child is not None:
                    if child not in self.files:
                        continue
                    if child not in index:
                        index[child] = low[child] = counter
                        counter += 1
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(sorted(self.edges.get(child, {})))))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
        return found

    def violations(self, lower: str, higher: tuple[str, ...]) -> list[str]:
        """``file:line importer -> imported`` for every import from ``lower`` into any of ``higher``."""
        out = []
        for importer, targets in sorted(self.edges.items()):
            if not _within(importer, lower):
                continue
            for imported, line in sorted(targets.items()):
                if any(_within(imported, h) for h in higher):
                    out.append(f"{self.files[importer]}:{line} {importer} -> {imported}")
        return out


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def build_graph(roots: dict[str, Path], entry_points: dict[str, tuple[str, list[str]]] | None = None,
                extensions: set[str] = frozenset()) -> ImportGraph:
    """The graph of every ``.py`` file under ``roots`` (package name -> folder).

    ``entry_points`` maps a group to (the module that loads it, the targets registered in it);
    ``extensions`` names the compiled extension modules (``from pkg import _ext`` imports those, not ``pkg``).
    """
    graph = ImportGraph()
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            parts = [package, *rel]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            graph.files[".".join(parts)] = path
    for module, path in graph.files.items():
        is_package = path.name == "__init__.py"
        for imported, line in _imports(path, module, is_package):
            target = None if imported in extensions else _resolve(imported, graph.files)
            if target is not None:
                graph.add(module, target, line)
    for loader, targets in (entry_points or {}).values():
        for target in targets:
            resolved = _resolve(target.partition(":")[0], graph.files)
            if resolved is not None:
                graph.add(loader, resolved, 0)
    return graph


def _imports(path: Path, module: str, is_package: bool):
    """(dotted name, line) of everything ``path`` imports or names as a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                yield f"{origin}.{alias.name}", node.lineno  # a submodule, or a name in ``origin``
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            yield node.value.partition(":")[0], node.lineno


def _resolve(name: str, files: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules; None for anything else."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in files:
            return candidate
        parts.pop()
    return None

