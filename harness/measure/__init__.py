"""Measuring one case in its own process: the worker (:mod:`.worker`) and the scenario loops (:mod:`.scenarios`).
"""
