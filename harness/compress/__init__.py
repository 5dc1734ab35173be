"""Compression recipes: typed configs mapped through a registry to handlers that emit artifacts.

:mod:`.base` holds the :class:`~.base.Recipe` contract; :mod:`.registry` finds recipes through the
``costbench.recipes`` entry-point group (see :mod:`costbench.core.plugins`); each other module is one
family of recipes.
"""
