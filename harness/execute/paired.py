"""A/B in one window: BASE and NEW measured alternately, process by process, so the drift they share cancels.

Two runs compared after the fact (``costbench compare BASE NEW``) were measured in different windows, and a
small shared VM moves by a few percent from one window to the next (identical runs one minute apart:
x0.96-x1.03, docs/replication.md). The processes of one run cannot see that move, so it lands whole in
the ratio. Here both sides are measured in the same window: round k measures process k of every matched
case on both sides, one right after the other, BASE first in even rounds and NEW first in odd ones (a
steady trend within a round then cancels as well).

The sides are two suites over the same cases (a changed option, a new runtime version behind a plugin),
or one suite measured by two interpreters (``python``: another virtual environment with another
costbench or runtime installed: a commit gate), or with two environments (``env``: a runtime's control,
such as ``GLIBC_TUNABLES`` or ``OMP_WAIT_POLICY``, set for one side's processes; the run header's
``executor`` records it). Cases are matched by their series (model, variant,
backend label, device, scenario, batch size). Each side is an ordinary run file whose process records
carry ``info["paired"]`` (the other run, the side, the rule), so ``compare``, reports and stores read
them as they read any run.

The decision takes up to three looks, after ``processes``, 3x and 5x as many rounds (``LOOK_ROUNDS``). At
each look the runs are compared (the caller's ``judge``: :func:`costbench.api.ab` brings
:func:`~costbench.harness.reports.compare.compare_runs`); only a case with a series that is neither called
nor shown inside +-threshold by its 95% interval, or that is unstable because a side's processes disagree
(mostly a slow phase of the machine that met a few of them), gets the next look's rounds. A change is claimed at
q < alpha / 3 at any look (Bonferroni over the looks, so the level of the whole procedure stays alpha);
``compare`` applies that level to any pair of runs measured this way. A clear change or a clear tie stops
early; samples go where the decision needs them. The test itself is compare's: Welch's t on the log
per-process medians (Yuen's trimmed t and a rank test were no more powerful in the pilot). A t test on the pairs' log ratios
would have 4 degrees of freedom at 5 pairs, and at q < 0.001 its critical value (8.6, against Welch's 5.0
with about 8) costs more than the pairing cancels (a quarter of the variance in the pilot).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from costbench.core.artifacts import default_cache_dir
from costbench.core.stats import SIGNIFICANCE_ALPHA
from costbench.harness.execute.executor import CaseOutcome, LocalExecutor
from costbench.harness.execute.plan import PLANNED, Case
from costbench.harness.execute.runner import RunSummary, _execute, new_run_id, run_header
from costbench.harness.machine.env import fingerprint
from costbench.harness.results.store import RunFile
from costbench.harness.suite.schema import Suite

SIDES = ("base", "new")
# The looks, in multiples of `processes` rounds. On the 2-vCPU VM whose processes spread by ~5% with a heavy tail (a
# tenth of them over 8% above their case's median), a +10% change drawn from those processes is called in 91% of
# trials with looks at 1x and 3x (measured on real cases on a noisier day: 80%), and in 99% with a third look at 5x,
# 94% when the spread is a quarter wider; that costs 14.5-17 pairs a case on average, where a second look at 5x alone
# costs 21-23 (results/reference/2026-12-05-amd-epyc-vnni-2vcpu/power-ab-robust/pilot.py). Measured on real cases,
# with an unstable series sent to the next look: 30 of 30 called, A/A clean (power-ab-4/).
LOOK_ROUNDS = (1, 3, 5)
LOOKS = len(LOOK_ROUNDS)
PAIRED_ALPHA = SIGNIFICANCE_ALPHA / LOOKS
MIN_PAIRS = 3  # a side's interval needs 2 degrees of freedom at least


class PairingError(ValueError):
    """BASE and NEW cannot be measured side by side (no case in common, unequal processes, not local)."""


@dataclass
class Side:
    """One side of an A/B run: its suite, the interpreter that measures it (default: this one), and variables
    set in its processes' environment (a runtime's control: ``OMP_WAIT_POLICY``, ``GLIBC_TUNABLES``, ...)."""

    name: str  # base | new
    suite: Suite
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class PairedSummary:
    """The two runs, and what was measured: the matched cases, those only one side has, and the cases each look
    after the first measured again (``more_looks[0]``: the second look's, ...)."""

    base: RunSummary
    new: RunSummary
    matched: list[str]
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    more_looks: list[list[str]] = field(default_factory=list)

    @property
    def second_look(self) -> list[str]:
        """The cases measured beyond the first look."""
        return self.more_looks[0] if self.more_looks else []


def series_key(case: Any) -> tuple:
    """What a case (or a compared series) is measured as in a comparison: compare's series keys, less the metric."""
    return (case.model, case.variant, case.backend, case.device, case.scenario, int(case.batch_size))


def case_label(case: Case) -> str:
    return f"{case.model} / {case.variant} / {case.backend} / {case.device} / {case.scenario} / b{case.batch_size}"


def match_cases(base: list[Case], new: list[Case]) -> tuple[list[tuple[Case, Case]], list[Case], list[Case]]:
    """(matched pairs in BASE's plan order, cases only BASE plans, cases only NEW plans)."""
    by_key = {series_key(c): c for c in new}
    pairs = [(b, by_key[series_key(b)]) for b in base if series_key(b) in by_key]
    matched = {series_key(b) for b, _ in pairs}
    return (pairs, [b for b in base if series_key(b) not in matched],
            [n for n in new if series_key(n) not in matched])


class _SideExecutor(LocalExecutor):
    """The local executor with one side's interpreter, marking each outcome with the pairing."""

    def __init__(self, python: str | None, env: dict[str, str], tag: dict[str, Any]):
        super().__init__(python, env)
        self.tag = tag

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "python": self.python or sys.executable, "env": self.env}

    def run_cases(self, cases: Iterable[Case], *args: Any, **kwargs: Any) -> Iterator[CaseOutcome]:
        for outcome in super().run_cases(cases, *args, **kwargs):
            outcome.info = {**outcome.info, "paired": self.tag}
            yield outcome


OnProcess = Callable[[str, Case], None]
OnOutcome = Callable[[str, CaseOutcome], None]


#: After a look: (BASE run id, NEW run id) -> the series keys (:func:`series_key`) still undecided.
Judge = Callable[[str, str], set[tuple]]


def run_paired(base: Side, new: Side, results_dir: Path, judge: Judge | None = None, cache_dir: Path | None = None,
               only: list[dict[str, str]] | None = None, on_start: OnProcess | None = None,
               on_done: OnOutcome | None = None, on_plan: Callable[[int, int], None] | None = None) -> PairedSummary:
    """Measure BASE and NEW's matched cases alternately in one window, in up to ``LOOKS`` looks; two run files.

    ``judge`` compares the runs after each look but the last (the comparison is a report's: the caller brings
    it; None: the first look only). ``on_start(side, case)`` before each process, ``on_done(side, outcome)`` after;
    ``on_plan(cases, processes)`` before each look. Raises :class:`PairingError`.
    """
    for side in (base, new):
        kind = side.suite.executor.kind if side.suite.executor is not None else "local"
        if kind != "local":
            raise PairingError(f"{side.suite.source}: an A/B run measures both sides here, in one window; the "
                               f"suite names the {kind!r} executor")
    planner = LocalExecutor()
    plans = {side.name: planner.plan(side.suite, only) for side in (base, new)}
    pairs, only_base, only_new = match_cases(plans["base"], plans["new"])
    measured = [(b, n) for b, n in pairs if b.status == PLANNED and n.status == PLANNED]
    if not measured:
        raise PairingError("BASE and NEW have no runnable case in common (cases are matched by model, variant, "
                           "backend label, device, scenario and batch size)")
    for b, n in measured:
        if b.processes != n.processes or b.processes < MIN_PAIRS:
            raise PairingError(f"{case_label(b)}: BASE measures {b.processes} processes and NEW {n.processes}; an "
                               f"A/B run needs the same number a side, at least {MIN_PAIRS} (set processes, or "
                               "--processes)")
    cache_dir = cache_dir or default_cache_dir()
    results_dir.mkdir(parents=True, exist_ok=True)
    env = fingerprint()
    ids = {"base": new_run_id(), "new": new_run_id()}
    while ids["new"] == ids["base"]:
        ids["new"] = new_run_id()
    files, headers, executors = {}, {}, {}
    for side in (base, new):
        other = ids["new" if side.name == "base" else "base"]
        tag = {"with": other, "side": side.name, "looks": LOOKS, "alpha": PAIRED_ALPHA}
        executors[side.name] = _SideExecutor(side.python, side.env, tag)
        headers[side.name] = run_header(ids[side.name], side.suite, plans[side.name], executors[side.name], env, only)
        headers[side.name]["paired"] = tag
        files[side.name] = RunFile.create(results_dir, headers[side.name])
    sides = {"base": base, "new": new}

    def measure(case: Case, side: str) -> None:
        if on_start:
            on_start(side, case)
        # One process per call: the store is synced by its readers (the judge, compare), not after every process.
        out = _execute(files[side], headers[side], [case], results_dir, cache_dir, sides[side].suite.memory_limit_mb,
                       None, None, executors[side], None, False, sync=False)
        if on_done:
            on_done(side, out[0])

    # What the plan skips, each side records once, as any run does.
    for side in SIDES:
        for c in plans[side]:
            if c.status != PLANNED:
                measure(c, side)

    def rounds(todo: list[tuple[Case, Case]], start: Callable[[Case], int], stop: Callable[[Case], int]) -> None:
        for k in range(min(start(b) for b, _ in todo), max(stop(b) for b, _ in todo)):
            for b, n in todo:
                if start(b) <= k < stop(b):
                    first, second = (("base", b), ("new", n)) if k % 2 == 0 else (("new", n), ("base", b))
                    measure(replace(first[1], process=k), first[0])
                    measure(replace(second[1], process=k), second[0])

    if on_plan:
        on_plan(len(measured), 2 * sum(b.processes for b, _ in measured))
    rounds(measured, lambda c: 0, lambda c: c.processes)
    todo, more_looks = measured, []
    for before, after in zip(LOOK_ROUNDS, LOOK_ROUNDS[1:]):
        open_keys = judge(ids["base"], ids["new"]) if judge else set()
        todo = [(b, n) for b, n in todo if series_key(b) in open_keys]
        if not todo:
            break
        if on_plan:
            on_plan(len(todo), 2 * (after - before) * sum(b.processes for b, _ in todo))
        rounds(todo, lambda c, m=before: m * c.processes, lambda c, m=after: m * c.processes)
        more_looks.append([case_label(b) for b, _ in todo])
    summaries = {side: RunSummary(ids[side], files[side].path, []) for side in SIDES}
    return PairedSummary(summaries["base"], summaries["new"], [case_label(b) for b, _ in measured],
                         [case_label(c) for c in only_base], [case_label(c) for c in only_new], more_looks)
