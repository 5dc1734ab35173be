"""Compression recipes: typed configs mapped through a registry to handlers that emit artifacts."""

from costbench.harness.compress.base import Recipe, RecipeConfig, get_recipe, recipe_names, register_recipe

__all__ = ["Recipe", "RecipeConfig", "get_recipe", "recipe_names", "register_recipe"]
