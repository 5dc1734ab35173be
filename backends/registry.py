"""Backend registry: every backend comes from the ``costbench.backends`` entry-point group.

Third parties add a backend with a pip install that declares an entry point. For development
and tests, ``COSTBENCH_EXTRA_BACKENDS="name=package.module:Class,..."`` adds more without
installing (the same mechanism as recipes and zoo models: :mod:`costbench.core.plugins`).
"""

from __future__ import annotations

from dataclasses import dataclass

from costbench.backends.base import Availability, Backend
from costbench.core.plugins import PluginGroup, load_class

BACKENDS = PluginGroup("costbench.backends", "COSTBENCH_EXTRA_BACKENDS", "backend")
ENTRY_POINT_GROUP = BACKENDS.group
EXTRA_ENV = BACKENDS.extra_env


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


def load_registry() -> dict[str, BackendEntry]:
    """All registered backends by name. A backend whose module fails to import is kept with the error."""
    entries: dict[str, BackendEntry] = {}
    for name, target in sorted(BACKENDS.targets().items()):
        try:
            cls = load_class(target, Backend)
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
