"""A planned case: one measurement to make, as plain data that crosses a process boundary as JSON.

The planner (:mod:`costbench.harness.execute.plan`) makes them; the worker measures one; run files store them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

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
    # Fleet runs: the env_id of the machine class this case is planned for (one case per class); None when
    # the case runs wherever the run runs (the local executor).
    machine: str | None = None
    # Replication: the case is measured in ``processes`` fresh processes; this Case is measurement number
    # ``process`` (0-based). Every process of a case shares its case_id; only process 0 measures accuracy.
    processes: int = 1
    process: int = 0
    # Run the process on cores of its own and the harness on the rest (harness/machine/affinity.py).
    pin_cpus: bool = False

    def __post_init__(self) -> None:
        if not self.case_id:
            ident = [self.model, self.variant, self.backend, self.device, self.scenario, self.batch_size]
            if self.machine is not None:
                ident.append(self.machine)
            self.case_id = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]

    @property
    def job_id(self) -> str:
        """Names one process of the case: unique among the processes of a run, where case_id is shared."""
        return f"{self.case_id}.p{self.process}"

    @property
    def accuracy_here(self) -> bool:
        """Whether this process measures accuracy: once per case (process 0), since it does not vary by process."""
        return self.measure_accuracy and self.process == 0

    @property
    def scenario_kind(self) -> str:
        """The registered kind of this case's scenario (its label is the user's)."""
        return scenario_kind_of({"scenario_spec": self.scenario_spec, "scenario": self.scenario})

    def key(self) -> dict[str, Any]:
        """The fields filters and result rows identify a case by."""
        return {k: getattr(self, k) for k in FILTER_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Case":
        return cls(**data)


def scenario_kind_of(case: Mapping[str, Any]) -> str:
    """The registered kind of a case's scenario, from a case as data; records without a spec go by the label."""
    kind = (case.get("scenario_spec") or {}).get("kind")
    return str(kind) if kind else str(case["scenario"])
