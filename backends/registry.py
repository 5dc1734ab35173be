"""Backend registry: every backend comes from the ``costbench.backends`` entry-point group.

Third parties add a backend with a pip install that declares an entry point. For development
and tests, ``COSTBENCH_EXTRA_BACKENDS="name=package.module:Class,..."`` adds more without
installing; being an environment variable, it reaches the per-case child processes too.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from costbench.backends.base import Availability, Backend

ENTRY_POINT_GROUP = "costbench.backends"
EXTRA_ENV = "COSTBENCH_EXTRA_BACKENDS"


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: where it comes from, and the class once it imported (or why it did not)."""

    name: str
    target: str  # "package.module:Class"
    backend: Backend | None
    load_error: str = ""

    def probe(self) -> Availability:
        if self.backend is None:
            return Availability.missing(self.load_error)
        try:
            return self.backend.probe()
        except Exception as exc:  # a probe must never take the harness down
            return Availability.missing(f"probe raised {type(exc).__name__}: {exc}")


def _load(target: str) -> type[Backend]:
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise TypeError(f"{target} is not a costbench Backend subclass")
    return obj


def _targets() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for item in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise ValueError(f"{EXTRA_ENV}: expected name=package.module:Class, got {item!r}")
        found[name.strip()] = target.strip()
    return found


def load_registry() -> dict[str, BackendEntry]:
    """All registered backends by name. A backend whose module fails to import is kept with the error."""
    entries: dict[str, BackendEntry] = {}
    for name, target in sorted(_targets().items()):
        try:
            cls = _load(target)
            entries[name] = BackendEntry(name, target, cls())
        except Exception as exc:
            entries[name] = BackendEntry(name, target, None, f"could not import {target}: {type(exc).__name__}: {exc}")
    return entries


def get_backend(name: str) -> Backend:
    """The backend instance registered as ``name``; KeyError lists the registered names."""
    registry = load_registry()
    if name not in registry:
        raise KeyError(f"unknown backend {name!r}; registered: {', '.join(registry) or 'none'}")
    entry = registry[name]
    if entry.backend is None:
        raise RuntimeError(entry.load_error)
    return entry.backend
