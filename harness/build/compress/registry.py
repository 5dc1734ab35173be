"""The recipe registry: every recipe comes from the ``costbench.recipes`` entry-point group.

A third party adds a recipe with a pip install that declares ``name = "package.module:Class"`` there
(or, without installing, through ``COSTBENCH_EXTRA_RECIPES``). Only the recipe asked for is imported:
the handlers import their heavy libraries (torch, onnxruntime, nncf) inside their methods, but their
modules still cost something, and planning needs only a few.
"""

from __future__ import annotations

from costbench.core.plugins import PluginGroup
from costbench.harness.build.compress.base import Recipe

RECIPES = PluginGroup("costbench.recipes", "COSTBENCH_EXTRA_RECIPES", "recipe")


def get_recipe(name: str) -> Recipe:
    """An instance of the recipe named ``name``; KeyError lists the known ones."""
    cls = RECIPES.load(name, Recipe)
    if cls.name != name:
        raise TypeError(f"{RECIPES.target(name)} is registered as recipe {name!r} but names itself {cls.name!r}")
    return cls()


def recipe_names() -> list[str]:
    """Every registered recipe name, sorted (nothing is imported)."""
    return RECIPES.names()
