"""Runtimes behind one interface (:mod:`costbench.backends.base`), found through entry points."""

if __name__ != "costbench.backends":  # imported by its bare name from a checkout: costbench/_checkout.py
    from costbench._checkout import step_aside

    step_aside(__name__, __file__)

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention
from costbench.backends.registry import get_backend, load_registry

__all__ = ["Availability", "Backend", "BackendOptions", "Capabilities", "Session", "TimingConvention",
           "get_backend", "load_registry"]
