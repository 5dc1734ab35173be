"""Planning: a suite becomes Cases, the product model x variant x backend x scenario x batch size.

A case a backend cannot run is kept, marked skipped, with the reason, so a results table
shows the hole and why rather than silently omitting it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from costbench.backends.registry import BackendEntry, load_registry
from costbench.harness.compress.registry import get_recipe
from costbench.harness.suite_schema import Suite
from costbench.harness.zoo.registry import source_kind

PLANNED = "planned"
SKIPPED = "skipped"
FILTER_KEYS = ("model", "variant", "backend", "device", "scenario", "batch_size")


@dataclass
class Case:
    """One measurement to make: plain, serialisable data, so it crosses a process boundary as JSON."""

    model: str
    variant: str
    backend: str  # the backend's label in the suite (its registered name unless labelled)
    device: str
    scenario: str
    batch_size: int
    backend_name: str
    recipe: str
    recipe_options: dict[str, Any]
    backend_options: dict[str, Any]
    model_spec: dict[str, Any]
    scenario_spec: dict[str, Any]
    artifact_format: str | None
    timeout_s: float
    measure_accuracy: bool
    status: str = PLANNED
    reason: str = ""
    case_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.case_id:
            ident = [self.model, self.variant, self.backend, self.device, self.scenario, self.batch_size]
            self.case_id = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]

    def key(self) -> dict[str, Any]:
        """The fields filters and result rows identify a case by."""
        return {k: getattr(self, k) for k in FILTER_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Case":
        return cls(**data)


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
                 recipe_name: str, probe_cache: dict[str, Any]) -> tuple[str | None, str]:
    """(chosen artifact format, reason to skip or '')."""
    if entry is None:
        return None, f"backend {backend_name!r} is not registered"
    if backend_name not in probe_cache:
        probe_cache[backend_name] = entry.probe()
    availability = probe_cache[backend_name]
    if not availability.available:
        return None, f"backend {backend_name} unavailable: {availability.reason}"
    caps = entry.backend.capabilities
    if device not in caps.devices:
        return None, f"backend {backend_name} runs on {', '.join(caps.devices)}, not {device!r}"
    device_key = f"{backend_name}@{device}"
    if device_key not in probe_cache:
        probe_cache[device_key] = entry.backend.probe_device(device)
    if not probe_cache[device_key].available:
        return None, f"backend {backend_name} cannot use {device}: {probe_cache[device_key].reason}"
    if not formats:
        return None, f"recipe {recipe_name!r} does not apply to this model"
    fmt = entry.backend.accepts(formats)
    if fmt is None:
        return None, (f"variant built by {recipe_name!r} comes as {'/'.join(formats)}; "
                      f"backend {backend_name} loads {'/'.join(caps.formats)}")
    return fmt, ""


def make_plan(suite: Suite, only: list[dict[str, str]] | None = None) -> list[Case]:
    """Every case of the suite, in a stable order, after the suite's excludes and the ``only`` filters."""
    registry = load_registry()
    probes: dict[str, Any] = {}
    cases: list[Case] = []
    for model, variant, backend, scenario, batch in itertools.product(
        suite.models, suite.variants, suite.backends, suite.scenarios, suite.batch_sizes
    ):
        recipe = get_recipe(variant.recipe_name)
        formats = recipe.formats_for(source_kind(model))
        fmt, reason = _skip_reason(registry.get(backend.name), backend.name, backend.device, formats,
                                   recipe.name, probes)
        case = Case(
            model=model.id, variant=variant.name, backend=backend.display, device=backend.device,
            scenario=scenario.label, batch_size=batch, backend_name=backend.name, recipe=recipe.name,
            recipe_options=variant.options, backend_options=backend.options,
            model_spec=model.model_dump(mode="json"), scenario_spec=scenario.model_dump(mode="json"),
            artifact_format=fmt, timeout_s=suite.timeout_s, measure_accuracy=suite.accuracy,
            status=SKIPPED if reason else PLANNED, reason=reason,
        )
        if any(_matches(case, t) for t in suite.exclude):
            continue
        if only and not all(_matches(case, t) for t in only):
            continue
        cases.append(case)
    return cases
