"""Scenario registry: every scenario comes from the ``costbench.scenarios`` entry-point group.

A third party adds a scenario exactly as it adds a backend: a ``Scenario`` subclass with its settings
model (``Settings``), an entry point named after its ``kind``, and a ``ScenarioMetrics`` entry in the
metric catalogue naming its primary series. ``COSTBENCH_EXTRA_SCENARIOS="kind=package.module:Class"``
adds one without installing (:mod:`costbench.core.plugins`).
"""

from __future__ import annotations

from typing import Any

from costbench.core.plugins import PluginGroup
from costbench.harness.measure.scenarios.base import Scenario
from costbench.harness.suite.schema import ScenarioSettings

SCENARIOS = PluginGroup("costbench.scenarios", "COSTBENCH_EXTRA_SCENARIOS", "scenario")


def scenario_kinds() -> list[str]:
    """Registered scenario kinds (nothing is imported)."""
    return SCENARIOS.names()


def scenario_class(kind: str) -> type[Scenario]:
    """The class registered as ``kind``; KeyError lists the registered kinds."""
    cls = SCENARIOS.load(kind, Scenario)
    if cls.kind != kind:
        raise TypeError(f"{SCENARIOS.target(kind)} has kind {cls.kind!r} but is registered as {kind!r}")
    return cls


def parse_settings(spec: dict[str, Any]) -> ScenarioSettings:
    """A scenario's settings validated by its own model; pydantic's ValidationError names the bad keys."""
    return scenario_class(spec["kind"]).Settings.model_validate(spec)


def make_scenario(spec: dict[str, Any]) -> Scenario:
    """The scenario object for a serialised scenario spec (``kind`` plus its settings)."""
    return scenario_class(spec["kind"])(parse_settings(spec))
