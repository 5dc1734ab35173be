"""Executor registry: every executor comes from the ``costbench.executors`` entry-point group.

A third party adds an executor as it adds a backend: an ``Executor`` subclass with its settings model
(``Settings``), registered under its ``name``. ``COSTBENCH_EXTRA_EXECUTORS="kind=package.module:Class"``
adds one without installing (:mod:`costbench.core.plugins`). An executor's module is imported only when
a suite names it, so a local run never imports Ray.
"""

from __future__ import annotations

from typing import Any

from costbench.core.plugins import PluginGroup
from costbench.harness.execute.executor import Executor, LocalExecutor
from costbench.harness.suite.schema import ExecutorSettings, ExecutorSpec

EXECUTORS = PluginGroup("costbench.executors", "COSTBENCH_EXTRA_EXECUTORS", "executor")


def executor_class(kind: str) -> type[Executor]:
    """The class registered as ``kind``; KeyError lists the registered kinds."""
    cls = EXECUTORS.load(kind, Executor)
    if cls.name != kind:
        raise TypeError(f"{EXECUTORS.target(kind)} is named {cls.name!r} but registered as {kind!r}")
    return cls


def _section(spec: ExecutorSpec | dict[str, Any]) -> dict[str, Any]:
    data = spec.model_dump() if isinstance(spec, ExecutorSpec) else dict(spec)
    data.setdefault("kind", "local")
    return data


def parse_executor_settings(spec: ExecutorSpec | dict[str, Any]) -> ExecutorSettings:
    """An executor section validated by its executor's own settings model (pydantic's ValidationError names keys)."""
    data = _section(spec)
    return executor_class(data["kind"]).Settings.model_validate(data)


def executor_for(spec: ExecutorSpec | dict[str, Any] | None) -> Executor:
    """The executor a suite's (or a run header's) ``executor`` section names; local when there is none.

    A run header's section also holds what the executor described about itself (``describe()``): only the
    keys its settings model knows are read back.
    """
    if spec is None:
        return LocalExecutor()
    data = _section(spec)
    cls = executor_class(data["kind"])
    known = cls.Settings.model_fields
    return cls.from_settings(cls.Settings.model_validate({k: v for k, v in data.items() if k in known}))
