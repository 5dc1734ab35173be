"""Runtimes behind one interface (:mod:`costbench.backends.base`), found through entry points."""

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention
from costbench.backends.registry import get_backend, load_registry

__all__ = ["Availability", "Backend", "BackendOptions", "Capabilities", "Session", "TimingConvention",
           "get_backend", "load_registry"]
