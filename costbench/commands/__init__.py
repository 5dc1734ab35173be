"""The command layer: the ``costbench`` CLI and the commands that compose the layers below it.

Nothing below imports from here. ``costbench compress`` (which plans and runs a suite of variants)
and ``costbench kernels bench`` (which loads MiniLM from the zoo for its end-to-end case) live here
because they join the harness with the kernels and recipes.
"""
