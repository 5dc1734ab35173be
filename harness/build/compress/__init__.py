"""Compression recipes: typed configs mapped through a registry to handlers that emit artifacts.

:mod:`.base` holds the :class:`~.base.Recipe` contract; :mod:`.registry` finds recipes through the
``costbench.recipes`` entry-point group (see :mod:`costbench.core.plugins`); :mod:`.common` holds the
helpers the recipes share (library versions, calibration samples); :mod:`.onnx_export`,
:mod:`.executorch_export` and :mod:`.litert_export` convert a torch module to a format; each other
module is one family of recipes.
"""
