"""Keep a checkout of costbench from shadowing installed packages when its root is on ``sys.path``.

``python -m ...`` and ``python -c ...`` put the current folder first on ``sys.path``. Run from the
repository root, the folders the project keeps there (``harness/``, ``backends/``, ``kernels/``,
``costbench/``) would then answer to their bare names: ``import kernels`` would find our int8 GEMMs
instead of Hugging Face's ``kernels`` package (which Transformers imports), and with a non-editable
install ``import costbench`` would find the checkout's partial ``costbench/`` (``core/`` and
``commands/`` only) instead of the installed package.

Each of those folders' ``__init__.py`` calls :func:`step_aside` when it finds itself imported under
the wrong name (or, for ``costbench/``, as the partial tree while a full install exists): the module
being imported is replaced in ``sys.modules`` by the one the rest of ``sys.path`` holds, exactly as if
the checkout's root were not on it. Python's import system returns whatever ``sys.modules`` holds
after a module's body ran, so the importer gets the installed package. This module imports nothing
of ours.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _elsewhere(name: str, checkout_root: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of top-level ``name`` on ``sys.path`` with the checkout's root left out."""
    root = os.path.realpath(checkout_root)
    path = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]
    return importlib.machinery.PathFinder.find_spec(name, path)


def step_aside(name: str, init_file: str, *, required: bool = True, accept=None) -> bool:
    """Replace module ``name`` (being imported from the checkout's ``init_file``) by the one found elsewhere.

    ``accept(spec)`` may reject a candidate (e.g. another partial tree). Where nothing else is found,
    raise ``ModuleNotFoundError`` as Python would have without the checkout (``required``), or
    return ``False`` and leave the checkout's module in place. Returns ``True`` when replaced.
    """
    checkout_root = os.path.dirname(os.path.dirname(os.path.abspath(init_file)))
    spec = _elsewhere(name, checkout_root)
    if spec is None or spec.loader is None or (accept is not None and not accept(spec)):
        if required:
            raise ModuleNotFoundError(f"No module named {name!r} (the costbench checkout at {checkout_root} "
                                      f"holds a folder {name!r} of its own, which is not that package)", name=name)
        return False
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return True


def is_full_tree(spec: importlib.machinery.ModuleSpec) -> bool:
    """Whether a ``costbench`` package found on ``sys.path`` is a complete install (it holds ``harness``)."""
    return any(os.path.isdir(os.path.join(p, "harness")) for p in (spec.submodule_search_locations or []))
