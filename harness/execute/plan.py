"""Planning: a suite becomes Cases, the product model x variant x backend x scenario x batch size.

A case a backend cannot run is kept, marked skipped, with the reason, so a results table
shows the hole and why rather than silently omitting it.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import replace
from typing import Any, Iterable

from costbench.backends.base import Availability
from costbench.backends.registry import BackendEntry, load_registry
from costbench.harness.build.compress.registry import get_recipe
from costbench.harness.measure.scenarios.registry import make_scenario, scenario_class
from costbench.harness.suite.skips import format_mismatch, not_applicable, not_generative
from costbench.harness.suite.case import FILTER_KEYS, PLANNED, SKIPPED, Case  # noqa: F401 (planning's vocabulary)
from costbench.harness.suite.schema import Suite
from costbench.harness.build.zoo.base import SOURCE_HF
from costbench.harness.build.zoo.registry import source_kind

def interleave(cases: Iterable[Case], done: set[tuple[str, int]] | None = None) -> list[Case]:
    """One Case per process still to measure, round-robin over the cases: every case's process 0 in plan order,
    then every case's process 1, and so on. A slow phase of the machine then spreads over all cases instead of
    landing on one, and builds all happen in the first round (later processes find them in the cache).

    A skipped case yields itself once (process 0). ``done``: (case_id, process) pairs already recorded.
    """
    done = done or set()
    cases = list(cases)
    out = []
    for k in range(max((c.processes for c in cases), default=0)):
        for c in cases:
            if k >= (c.processes if c.status == PLANNED else 1) or (c.case_id, k) in done:
                continue
            out.append(replace(c, process=k))
    return out


def probe_machine(backends: Iterable[str] | None = None) -> dict[str, Availability]:
    """What this machine can run: each registered backend's probe (of ``backends``, default all), and
    ``name@device`` for each of its devices. A named backend not registered here is reported missing.

    The same table :func:`make_plan` fills as it goes; a fleet node sends it to the driver (as
    :func:`availability_to_dict`) so the driver can plan that node's cases without probing it.
    """
    table: dict[str, Availability] = {}
    registry = load_registry()
    wanted = list(registry) if backends is None else list(backends)
    for name in wanted:
        entry = registry.get(name)
        if entry is None:
            table[name] = Availability.missing(f"backend {name!r} is not registered on that machine")
            continue
        table[name] = entry.probe()
        if table[name].available and entry.backend is not None:
            for device in entry.backend.capabilities.devices:
                table[f"{name}@{device}"] = entry.backend.probe_device(device)
    return table


def availability_to_dict(table: dict[str, Availability]) -> dict[str, dict[str, Any]]:
    return {k: {"available": a.available, "reason": a.reason, "versions": dict(a.versions)} for k, a in table.items()}


def availability_from_dict(data: dict[str, dict[str, Any]]) -> dict[str, Availability]:
    return {k: Availability(bool(v["available"]), v.get("reason", ""), dict(v.get("versions") or {}))
            for k, v in data.items()}


class _Probes:
    """Backend probes, each made once: on this machine, or read from another machine's table."""

    def __init__(self, table: dict[str, Availability] | None = None):
        self.remote = table is not None
        self.table: dict[str, Availability] = dict(table or {})

    def _get(self, key: str, probe) -> Availability:
        if key not in self.table:
            # A machine's table lists every backend registered there; one it lacks is not installed there.
            self.table[key] = (Availability.missing(f"{key.split('@')[0]} is not registered on that machine")
                               if self.remote else probe())
        return self.table[key]

    def backend(self, entry: BackendEntry) -> Availability:
        return self._get(entry.name, entry.probe)

    def device(self, entry: BackendEntry, device: str) -> Availability:
        return self._get(f"{entry.name}@{device}", lambda: entry.backend.probe_device(device))


def parse_filters(items: Iterable[str]) -> list[dict[str, str]]:
    """``key=glob`` strings (CLI ``--only``) as filter tables; one table per string, all must match."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in FILTER_KEYS:
            raise ValueError(f"filter {item!r}: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
        out.append({key.strip(): value.strip()})
    return out


def _matches(case: Case, table: dict[str, Any]) -> bool:
    key = case.key()
    for k, pattern in table.items():
        if k not in key:
            raise ValueError(f"exclude/filter key {k!r} is not one of {', '.join(FILTER_KEYS)}")
        if not fnmatch.fnmatchcase(str(key[k]), str(pattern)):
            return False
    return True


def _skip_reason(entry: BackendEntry | None, backend_name: str, device: str, formats: tuple[str, ...],
                 recipe_name: str, probes: _Probes) -> tuple[str | None, str]:
    """(chosen artifact format, reason to skip or '')."""
    if entry is None:
        return None, f"backend {backend_name!r} is not registered"
    # What can never run is said first, whatever this machine has: it is a fact of the combination.
    if not formats:
        return None, not_applicable(recipe_name)
    if entry.backend is not None and entry.backend.accepts(formats) is None:
        return None, format_mismatch(recipe_name, formats, backend_name, entry.backend.capabilities.formats)
    availability = probes.backend(entry)
    if not availability.available:
        return None, f"backend {backend_name} unavailable: {availability.reason}"
    if entry.backend is None:  # available on another machine, but its class does not import where we plan
        return None, f"backend {backend_name} cannot be planned here: {entry.load_error}"
    caps = entry.backend.capabilities
    if device not in caps.devices:
        return None, f"backend {backend_name} runs on {', '.join(caps.devices)}, not {device!r}"
    on_device = probes.device(entry, device)
    if not on_device.available:
        return None, f"backend {backend_name} cannot use {device}: {on_device.reason}"
    return entry.backend.accepts(formats), ""


def _time_budget_s(scenario) -> float:
    """The scenario's own planned measuring time (a capacity search's budget), added to the case's timeout."""
    return make_scenario(scenario.model_dump(mode="json")).time_budget_s()


def make_plan(suite: Suite, only: list[dict[str, str]] | None = None,
              probes: dict[str, Availability] | None = None, machine: str | None = None) -> list[Case]:
    """Every case of the suite, in a stable order, after the suite's excludes and the ``only`` filters.

    Backends are probed here, unless ``probes`` gives another machine's table (:func:`probe_machine`);
    ``machine`` is then that machine class's env_id, and part of each case's id.
    """
    registry = load_registry()
    checked = _Probes(probes)
    cases: list[Case] = []
    for model, variant, backend, scenario, batch in itertools.product(
        suite.models, suite.variants, suite.backends, suite.scenarios, suite.batch_sizes
    ):
        recipe = get_recipe(variant.recipe_name)
        kind = source_kind(model)
        formats = recipe.formats_for(kind)
        fmt, reason = _skip_reason(registry.get(backend.name), backend.name, backend.device, formats,
                                   recipe.name, checked)
        if scenario_class(scenario.kind).needs_generative and kind != SOURCE_HF:
            fmt, reason = None, not_generative(scenario.label)
        case = Case(
            model=model.id, variant=variant.name, backend=backend.display, device=backend.device,
            scenario=scenario.label, batch_size=batch, backend_name=backend.name, recipe=recipe.name,
            recipe_options=variant.options, backend_options=backend.options,
            model_spec=model.model_dump(mode="json"), scenario_spec=scenario.model_dump(mode="json"),
            artifact_format=fmt, timeout_s=suite.timeout_s + _time_budget_s(scenario), measure_accuracy=suite.accuracy,
            status=SKIPPED if reason else PLANNED, reason=reason, machine=machine, processes=suite.processes_of(scenario),
            pin_cpus=suite.pin_cpus,
        )
        if any(_matches(case, t) for t in suite.exclude):
            continue
        if only and not all(_matches(case, t) for t in only):
            continue
        cases.append(case)
    return cases
