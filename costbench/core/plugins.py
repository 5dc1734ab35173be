"""One registration mechanism for every plugin kind: entry points, plus an environment variable for development.

Backends (``costbench.backends``), recipes (``costbench.recipes``) and zoo models (``costbench.models``)
are all found the same way: a package declares ``name = "package.module:Class"`` in the entry-point
group, and a pip install makes it available. For development and tests, an environment variable
(``COSTBENCH_EXTRA_BACKENDS``, ``COSTBENCH_EXTRA_RECIPES``, ``COSTBENCH_EXTRA_MODELS``) holding
``name=package.module:Class,...`` adds more without installing; being an environment variable, it
reaches the per-case child processes too.

Targets are strings until asked for, so listing names imports nothing.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points


@dataclass(frozen=True)
class PluginGroup:
    """An entry-point group and the environment variable that extends it."""

    group: str  # e.g. "costbench.recipes"
    extra_env: str  # e.g. "COSTBENCH_EXTRA_RECIPES"
    kind: str  # what one plugin is called in messages: "backend", "recipe", "zoo model"

    def targets(self) -> dict[str, str]:
        """Every registered name and its ``package.module:Class`` target; the environment variable wins."""
        found = {ep.name: ep.value for ep in entry_points(group=self.group)}
        for item in filter(None, (s.strip() for s in os.environ.get(self.extra_env, "").split(","))):
            name, sep, target = item.partition("=")
            if not sep or ":" not in target:
                raise ValueError(f"{self.extra_env}: expected name=package.module:Class, got {item!r}")
            found[name.strip()] = target.strip()
        return found

    def names(self) -> list[str]:
        """Registered names, sorted (nothing is imported)."""
        return sorted(self.targets())

    def target(self, name: str) -> str:
        """The target registered as ``name``; KeyError lists the registered names."""
        targets = self.targets()
        if name not in targets:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(targets)) or 'none'}")
        return targets[name]

    def load(self, name: str, base: type) -> type:
        """Import the class registered as ``name`` and check it subclasses ``base``."""
        return load_class(self.target(name), base)


def load_class(target: str, base: type) -> type:
    """The class at ``package.module:Attr.Path``; TypeError when it is not a subclass of ``base``."""
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise TypeError(f"{target} is not a costbench {base.__name__} subclass")
    return obj
