"""CPU pinning: the plan for a case's threads, the child started on its cores, the harness's threads moved and
moved back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from costbench.harness.execute.executor import _child_setup
from costbench.harness.machine.affinity import allowed_cpus, harness_on, plan_cpus


def test_a_runtime_on_fewer_threads_than_cores_gets_the_last_ones_and_the_harness_the_rest():
    plan = plan_cpus(1, (0, 1, 2, 3))
    assert plan.worker == (3,) and plan.harness == (0, 1, 2) and plan.pins
    assert plan_cpus(3, (4, 5, 6, 7)).worker == (5, 6, 7)
    for threads in (None, 4, 8):  # every core, or more threads than cores: nothing to spare, nothing moved
        plan = plan_cpus(threads, (0, 1, 2, 3))
        assert plan.worker == plan.harness == (0, 1, 2, 3) and not plan.pins and "none to spare" in plan.why
    assert plan_cpus(1, (0, 1)).record() == {"worker_cpus": [1], "harness_cpus": [0], "pinned": True,
                                             "why": "1 of 2 cores for the runtime, the rest for the harness"}


needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two CPUs to choose between")


@needs_two
def test_the_child_starts_on_its_cores():
    plan = plan_cpus(1, allowed_cpus())
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, check=True, preexec_fn=_child_setup(plan.worker))
    assert out.stdout.strip() == str(list(plan.worker))


@needs_two
def test_every_harness_thread_moves_to_its_cores_and_back():
    before = os.sched_getaffinity(0)
    plan = plan_cpus(1, allowed_cpus())
    seen: dict[str, set[int]] = {}
    go, looked, stop = threading.Event(), threading.Event(), threading.Event()

    def display():  # stands for the runner's progress display thread, started before the block
        go.wait()
        seen["thread"] = os.sched_getaffinity(0)
        looked.set()
        stop.wait()
        seen["thread after"] = os.sched_getaffinity(0)

    t = threading.Thread(target=display)
    t.start()
    with harness_on(plan.harness):
        seen["main"] = os.sched_getaffinity(0)
        go.set()
        looked.wait()
    stop.set()
    t.join()
    assert seen["main"] == seen["thread"] == set(plan.harness)
    assert seen["thread after"] == before and os.sched_getaffinity(0) == before
