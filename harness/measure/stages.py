"""The steps of a measured case, marked in a file beside its RESULT.json as the worker enters each.

A process that dies without a result (a crash, a timeout, the memory limit) still leaves the step it died
in, so the runner can tell a failure that will repeat in every process of the case (building the artifact,
preparing the session: nothing there varies between processes) from one that may not (measuring).
"""

from __future__ import annotations

from pathlib import Path

STAGES = ("build", "prepare", "measure")  # in order: build/load the inputs, prepare the session, measure it
REPEATING = ("build", "prepare")  # a failure here repeats in every process of the case


def stage_file(result_path: Path) -> Path:
    """Where the worker writing ``result_path`` marks its current step."""
    return result_path.with_name(result_path.name + ".stage")


class StageMarker:
    """Writes the step a case is in to its stage file (nothing until :attr:`path` is set)."""

    path: Path | None = None

    def enter(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
        if self.path is not None:
            self.path.write_text(stage)


def read_stage(result_path: Path) -> str | None:
    """The step the worker writing ``result_path`` was last in, or None when it marked none."""
    try:
        return stage_file(result_path).read_text().strip() or None
    except OSError:
        return None
