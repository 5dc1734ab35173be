"""The Ray executor: a suite's cases measured on the nodes of a Ray cluster, one case per node at a time.

- **Connect.** ``ray.init`` to the cluster (an unreachable address is one clear error, before anything
  is planned). Each node runs a probe task pinned to it (node affinity) that reports, from a fresh
  process with the node's own environment, its fingerprint (:func:`costbench.harness.machine.env.fingerprint`)
  and the availability of the suite's backends (:func:`costbench.harness.execute.plan.probe_machine`; only those,
  so runtimes the suite does not use are not imported). Nodes with the same env_id form a machine class.
- **Plan.** The suite is planned against each node's probes (:func:`~costbench.harness.execute.plan.make_plan`
  with that node's table), so a node that lacks a backend is never sent that backend's cases, and a
  case no node of a class can run is kept, skipped, with the reason. By default every case runs once
  on every machine class (hardware selection); ``placement`` selectors keep only some nodes.
- **Measure.** A case task asks Ray for all of its node's CPUs (and GPUs): Ray then runs nothing else
  there while it measures, so one case measures at a time per node, without a lock of ours. The task is
  pinned to the node and calls the same :func:`~costbench.harness.execute.executor.run_case_in_child` as the
  local executor (child process, timeout, memory limit, builds in their own process), with the node's
  artifact cache. Case and outcome cross the wire as plain dicts. Nodes work concurrently; each outcome
  is yielded to the runner as it ends.
- **Faults.** A node that dies mid-case costs that case ("node lost", with the node's identity), or, with
  ``retry_lost``, the case is re-run once on another node of the same class.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from pydantic import Field, field_validator

from costbench.harness.execute.executor import (CaseOutcome, Executor, ExecutorError, OnStart, Stop, not_started,
                                               run_case_in_child)
from costbench.harness.execute.plan import (PLANNED, SKIPPED, Case, availability_from_dict, availability_to_dict, make_plan,
                                    probe_machine)
from costbench.harness.suite.schema import ExecutorSettings, Suite

INSTALL_HINT = "the Ray executor needs Ray: pip install 'costbench[fleet]'"
PROBE_TIMEOUT_S = 300.0  # a node's probe imports every backend once; a busy node may take a while
CONNECT_CHECK_S = 5.0


def _node_environ() -> dict[str, str]:
    """The environment the node's Ray worker was started with, without what Ray sets per task.

    Ray sets OMP_NUM_THREADS (and visible-accelerator variables) in the worker for each task; a case
    must see the node's own environment, as it would locally, so that its fingerprint and its thread
    settings are the machine's. The process's initial environment (Linux) is exactly that.
    """
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:  # not Linux: Ray's per-task thread setting is the one difference we know of
        return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _probe_task(backends: list[str]) -> dict[str, Any]:
    """On a node: its fingerprint and the probes of ``backends``, from a fresh process with the node's environment."""
    proc = subprocess.run([sys.executable, "-m", "costbench.harness.execute.ray", "--probe", ",".join(backends)],
                          env=_node_environ(), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"probe exited with code {proc.returncode}: {' / '.join(tail)}"}
    return json.loads(proc.stdout)


def _measure_task(case: dict[str, Any], memory_limit_mb: float | None) -> dict[str, Any]:
    """On a node: one case, exactly as the local executor runs it, with this node's cache. Plain data out."""
    from costbench.core.artifacts import default_cache_dir

    started = time.time()
    env = _node_environ()
    cache = Path(env["COSTBENCH_CACHE_DIR"]).expanduser() if env.get("COSTBENCH_CACHE_DIR") else default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="costbench-case-") as tmp:
        outcome = run_case_in_child(Case.from_dict(case), cache, Path(tmp), memory_limit_mb, env=env)
    return {"status": outcome.status, "reason": outcome.reason, "metrics": outcome.metrics, "info": outcome.info,
            "elapsed_s": outcome.elapsed_s, "stderr_tail": outcome.stderr_tail,
            "task": {"started": started, "ended": time.time()}}


@dataclass
class Node:
    """A cluster node as the executor sees it: Ray's record and what its probe reported."""

    node_id: str
    ip: str
    resources: dict[str, float]
    labels: dict[str, str]
    hostname: str = "?"
    fingerprint: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)  # name or name@device -> Availability
    unusable: str = ""  # why no case is sent here ('' when it measures)
    alive: bool = True
    probed_all: bool = False  # probes holds every backend registered there (not only a suite's)

    @property
    def env_id(self) -> str:
        return self.fingerprint.get("env_id", "?")

    def identity(self) -> dict[str, Any]:
        """What an outcome records about the node that measured it."""
        return {"node_id": self.node_id, "hostname": self.hostname, "ip": self.ip, "env_id": self.env_id}

    def describe(self) -> str:
        return f"{self.hostname} ({self.ip}, node {self.node_id[:12]}, env_id {self.env_id})"

    def request(self) -> dict[str, Any]:
        """Ray options that give a task the whole node: all its CPUs and GPUs, pinned there."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return {"num_cpus": self.resources.get("CPU", 0.0), "num_gpus": self.resources.get("GPU", 0.0),
                "scheduling_strategy": NodeAffinitySchedulingStrategy(self.node_id, soft=False), "max_retries": 0}

    def matches(self, selector: str) -> bool:
        if selector == "every-class":
            return True
        kind, _, value = selector.partition(":")
        key = self.fingerprint.get("key", {})
        if kind == "label":
            k, _, v = value.partition("=")
            return self.labels.get(k) == v
        if kind == "isa":
            return bool(key.get("isa", {}).get(value))
        if kind == "gpu":
            return any(value.lower() in g.get("name", "").lower() for g in key.get("gpus", []))
        if kind == "host":
            return fnmatch.fnmatchcase(self.hostname, value) or fnmatch.fnmatchcase(self.ip, value)
        return False


def _check_reachable(address: str) -> None:
    """An explicit HOST:PORT must accept a TCP connection; Ray itself would retry it for minutes."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        raise ExecutorError(f"Ray address {address!r}: Ray Client addresses (ray://) are not supported; give the "
                            "cluster's GCS address HOST:PORT (as `ray start --head` prints it)")
    if not sep or not port.isdigit():
        raise ExecutorError(f"Ray address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as exc:
        raise ExecutorError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}); start one with "
                            "`ray start --head` there, or check --address / the suite's [executor] address") from None


class RaySettings(ExecutorSettings):
    """The ``ray`` executor's settings: which cluster, which of its nodes, and what to do when one dies."""

    kind: Literal["ray"] = "ray"
    address: str | None = Field(None, description="the cluster's address 'HOST:PORT' (default: $RAY_ADDRESS, "
                                "else the cluster `ray start` started on this machine).")
    placement: list[str] = Field(default_factory=lambda: ["every-class"], description=(
        "'every-class' runs each case once on every distinct machine class (env_id) of the cluster; "
        "selectors keep only matching nodes (all must match): 'label:KEY=VALUE', 'isa:FLAG', 'gpu:NAME', 'host:GLOB'."))
    retry_lost: bool = Field(False, description="re-run a case once on another node of the same class when "
                             "its node dies mid-case (else it is recorded failed, 'node lost').")

    @field_validator("placement", mode="before")
    @classmethod
    def _one_selector(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("placement")
    @classmethod
    def _selectors(cls, v: list[str]) -> list[str]:
        for sel in v:
            kind, sep, value = sel.partition(":")
            if sel == "every-class":
                continue
            if not sep or kind not in ("label", "isa", "gpu", "host") or not value or (kind == "label" and "=" not in value):
                raise ValueError(f"placement {sel!r}: expected 'every-class' or a selector 'label:KEY=VALUE', "
                                 "'isa:FLAG', 'gpu:NAME' or 'host:GLOB'")
        return v


class RayExecutor(Executor):
    """Cases measured on the nodes of a Ray cluster, one case per node at a time, outcomes streamed back."""

    name = "ray"
    Settings = RaySettings
    measures_here = False

    @classmethod
    def from_settings(cls, settings: RaySettings) -> "RayExecutor":
        return cls(settings.address, placement=settings.placement, retry_lost=settings.retry_lost)

    def __init__(self, address: str | None = None, placement: list[str] | None = None, retry_lost: bool = False):
        self.address = address
        self.placement = list(placement or ["every-class"])
        self.retry_lost = retry_lost
        self.nodes: list[Node] = []
        self._targets: dict[str, list[str]] = {}  # case_id -> node ids that can run it
        self._in_flight: dict[str, Node] = {}  # Case.job_id (case and process) -> node measuring it
        self._connected = False

    # -- connecting ---------------------------------------------------------------------------------------

    def connect(self) -> list[Node]:
        """Join the cluster and list its nodes (once); ExecutorError names what is wrong."""
        if self._connected:
            return self.nodes
        address = self.address or os.environ.get("RAY_ADDRESS") or "auto"
        if address != "auto":
            _check_reachable(address)
            if address.rpartition(":")[0] in ("127.0.0.1", "localhost"):
                # A cluster on loopback: without this (read when Ray is imported) Ray rewrites 127.0.0.1 to the
                # machine's network address and waits for ever.
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise ExecutorError(INSTALL_HINT) from None
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False, namespace="costbench")
        except ConnectionError as exc:
            raise ExecutorError(f"no Ray cluster to join at {address!r}: {exc}") from None
        except Exception as exc:  # Ray raises several types for a bad address or a cluster that will not talk
            raise ExecutorError(f"cannot join the Ray cluster at {address!r}: {type(exc).__name__}: {exc}") from None
        self._connected = True
        self.nodes = [Node(n["NodeID"], n.get("NodeManagerAddress", "?"), dict(n.get("Resources") or {}),
                           {k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")},
                           hostname=n.get("NodeManagerHostname") or "?")
                      for n in ray.nodes() if n.get("Alive")]
        for node in self.nodes:
            if node.resources.get("CPU", 0) < 1:
                node.unusable = "offers Ray no CPU (started with --num-cpus=0?): not used for measuring"
        return self.nodes

    def probe(self, backends: Iterable[str] | None = None) -> list[Node]:
        """Connect, then have every measuring node report its fingerprint and these backends' probes (None: all).

        Probing only the backends a suite uses keeps heavy runtimes a suite does not need from being
        imported; a node's answers are kept, so planning again asks only for what is new.
        """
        import ray

        self.connect()
        wanted = None if backends is None else sorted(set(backends))
        todo = [n for n in self.nodes if not n.unusable and n.alive and
                (not n.fingerprint or wanted is None and not n.probed_all or
                 wanted is not None and not set(wanted) <= set(n.probes))]
        self._probe_nodes(ray, todo, wanted)
        self.nodes.sort(key=lambda n: (n.unusable != "", n.hostname, n.ip, n.node_id))
        return self.nodes

    def _probe_nodes(self, ray, nodes: list[Node], backends: list[str] | None) -> None:
        probe = ray.remote(_probe_task)
        refs = {probe.options(**node.request()).remote(backends or []): node for node in nodes}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S) if refs else ([], [])
        for ref in pending:
            refs[ref].unusable = f"its probe did not answer within {PROBE_TIMEOUT_S:g} s (busy? measuring for another run?)"
            ray.cancel(ref, force=True)
        for ref in ready:
            node = refs[ref]
            try:
                report = ray.get(ref)
            except Exception as exc:  # a node that died while probing
                node.unusable, node.alive = f"probe failed: {type(exc).__name__}: {exc}", False
                continue
            if "error" in report:
                node.unusable = report["error"]
                continue
            node.fingerprint = report["fingerprint"]
            node.hostname = node.fingerprint.get("recorded", {}).get("hostname", node.hostname)
            node.probes.update(availability_from_dict(report["probes"]))
            node.probed_all = node.probed_all or backends is None

    # -- planning ---------------------------------------------------------------------------------------

    def machine_classes(self) -> dict[str, list[Node]]:
        """The selected, usable nodes grouped by env_id (one machine class each), in a stable order."""
        classes: dict[str, list[Node]] = {}
        for node in self.nodes:
            if not node.unusable and node.alive and all(node.matches(s) for s in self.placement):
                classes.setdefault(node.env_id, []).append(node)
        return classes

    def plan(self, suite: Suite, only: list[dict[str, str]] | None = None) -> list[Case]:
        """Each case once per machine class, planned against that class's nodes; skipped with the reason where
        none of them can run it. ExecutorError when no node is selected, or no case can run anywhere."""
        self.probe(b.name for b in suite.backends)
        classes = self.machine_classes()
        if not classes:
            listing = "; ".join(f"{n.describe()}: {n.unusable or 'not selected'}" for n in self.nodes) or "no nodes"
            raise ExecutorError(f"no node of the Ray cluster can measure (placement {', '.join(self.placement)}): "
                                f"{listing}")
        cases: list[Case] = []
        per_class = []
        for env_id, members in classes.items():
            plans = [make_plan(suite, only, probes=n.probes, machine=env_id) for n in members]
            per_class.append((env_id, members, plans))
        if not per_class[0][2][0]:
            return []
        self._targets = {}
        for i in range(len(per_class[0][2][0])):  # case by case, then class by class
            for env_id, members, plans in per_class:
                able = [(n, p[i]) for n, p in zip(members, plans) if p[i].status == PLANNED]
                if able:
                    case = able[0][1]
                    self._targets[case.case_id] = [n.node_id for n, _ in able]
                else:
                    case = plans[0][i]
                    reasons = sorted({p[i].reason for p in plans})
                    case.status, case.reason = SKIPPED, "; ".join(reasons) + f" (on {_class_name(members)})"
                cases.append(case)
        if not any(c.status == PLANNED for c in cases):
            why = "; ".join(sorted({c.reason for c in cases}))
            raise ExecutorError(f"no node of the Ray cluster can run any case of suite {suite.name!r}: {why}")
        return cases

    def placement_of(self, case: Case) -> list[Node]:
        """The nodes that may measure ``case`` (empty for a skipped case)."""
        ids = set(self._targets.get(case.case_id, []))
        return [n for n in self.nodes if n.node_id in ids]

    def in_flight(self) -> dict[str, Node]:
        """Case.job_id (a case's process) -> the node measuring it now."""
        return dict(self._in_flight)

    def describe(self) -> dict[str, Any]:
        classes = {}
        for env_id, members in self.machine_classes().items():
            classes[env_id] = {"fingerprint": members[0].fingerprint, "nodes": [n.identity() for n in members]}
        return {"kind": self.name, "address": self.address, "placement": self.placement,
                "retry_lost": self.retry_lost, "machines": classes,
                "unused_nodes": [{**n.identity(), "why": n.unusable or "not selected by placement"}
                                 for n in self.nodes if n.unusable or not all(n.matches(s) for s in self.placement)]}

    # -- measuring ----------------------------------------------------------------------------------------

    def run_cases(self, cases: Iterable[Case], cache_dir: Path, workdir: Path, memory_limit_mb: float | None = None,
                  on_start: OnStart | None = None, stop: Stop | None = None) -> Iterator[CaseOutcome]:
        """Dispatch planned cases to idle nodes that can run them (one per node); yield outcomes as they end.

        ``cache_dir`` and ``workdir`` are this machine's and are not used: each node builds into its own
        cache (``$COSTBENCH_CACHE_DIR`` there, else ``~/.cache/costbench``) and a temporary folder.
        """
        import ray

        self.connect()
        queue: list[Case] = []
        for case in cases:
            if case.status != PLANNED:
                if on_start:
                    on_start(case)
                yield CaseOutcome(case, case.status, case.reason)
            else:
                queue.append(case)
        measure = ray.remote(_measure_task)
        tried: dict[str, list[Node]] = {}
        running: dict[Any, tuple[Case, Node, float]] = {}

        stopped: list[CaseOutcome] = []  # processes not started because their case's failure repeats

        def dispatch() -> None:
            busy = {node.node_id for _, node, _ in running.values()}
            for node in self.nodes:
                if node.node_id in busy or not node.alive or node.unusable:
                    continue
                for case in list(queue):
                    if node.node_id not in self._targets.get(case.case_id, ()) or node in tried.get(case.job_id, []):
                        continue
                    queue.remove(case)
                    first = case.job_id not in tried
                    # Judged just before it would start (a re-run after a lost node has started once already).
                    why = stop(case) if stop and first else None
                    if why:
                        if on_start:
                            on_start(case)
                        stopped.append(not_started(case, why))
                        continue  # this node is still free: the next case it can run
                    tried.setdefault(case.job_id, []).append(node)
                    ref = measure.options(**node.request()).remote(case.to_dict(), memory_limit_mb)
                    running[ref] = (case, node, time.time())
                    self._in_flight[case.job_id] = node
                    if first and on_start:
                        on_start(case)
                    break

        dispatch()
        while running or stopped:
            while stopped:
                yield stopped.pop(0)
            if not running:
                dispatch()
                continue
            (ref,), _ = ray.wait(list(running), num_returns=1)
            case, node, submitted = running.pop(ref)
            self._in_flight.pop(case.job_id, None)
            outcome = self._outcome(ray, ref, case, node, submitted, tried[case.job_id], queue)
            if outcome is not None:
                # The runner judges this outcome before the case's next process may be dispatched.
                yield outcome
            dispatch()
        for case in queue:  # nothing runs and nothing more can start: no live node is left for these
            if on_start and case.job_id not in tried:
                on_start(case)
            able = [n for n in self.nodes if n.node_id in self._targets.get(case.case_id, ())]
            if not able:  # a case this executor's plan() did not place: a caller's mistake, said plainly
                yield CaseOutcome(case, "failed", "not placed on any node: plan the cases with this executor's "
                                  "plan() before running them")
                continue
            yield CaseOutcome(case, "failed", "node lost: every node that could run it died ("
                              + "; ".join(n.describe() for n in able) + ")",
                              info={"lost_nodes": [n.identity() for n in able]}, env_id=able[0].env_id)

    def _outcome(self, ray, ref, case: Case, node: Node, submitted: float, tried: list[Node],
                 queue: list[Case]) -> CaseOutcome | None:
        """The case's outcome from its task; None when it is queued again after losing its node."""
        received = time.time()
        lost_before = [n.identity() for n in tried[:-1]]
        try:
            data = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # our task raised: a bug or a broken node, not the case
            return CaseOutcome(case, "failed", f"the case task raised on {node.describe()}: {exc.cause!r}",
                               info={"node": node.identity(), "lost_nodes": lost_before}, env_id=node.env_id)
        except ray.exceptions.RayError as exc:
            if not self._node_gone(ray, node, exc):
                return CaseOutcome(case, "failed", f"Ray lost the case's worker on {node.describe()}: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                                   info={"node": node.identity(), "lost_nodes": lost_before}, env_id=node.env_id)
            node.alive = False
            others = [n for n in self.nodes if n.alive and n.node_id in self._targets.get(case.case_id, ())
                      and n.env_id == node.env_id and n not in tried]
            if self.retry_lost and len(tried) == 1 and others:
                queue.insert(0, case)
                return None
            retried = " (after a re-run)" if len(tried) > 1 else ""
            return CaseOutcome(case, "failed", f"node lost{retried}: {node.describe()} died or disconnected mid-case",
                               info={"node": node.identity(), "lost_nodes": lost_before + [node.identity()]},
                               env_id=node.env_id)
        info = dict(data["info"] or {})
        info["node"] = node.identity()
        if lost_before:
            info["lost_nodes"] = lost_before
        info["dispatch"] = {"submitted": submitted, **data["task"], "received": received}
        return CaseOutcome(case, data["status"], data["reason"], data["metrics"], info, data["elapsed_s"],
                           data["stderr_tail"], env_id=node.env_id)

    @staticmethod
    def _node_gone(ray, node: Node, exc: Exception, wait_s: float = 60.0) -> bool:
        """Whether the node died, not just the worker: Ray says so, or stops listing the node alive soon."""
        if isinstance(exc, (ray.exceptions.NodeDiedError, ray.exceptions.TaskUnschedulableError)):
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # a killed raylet takes its workers first; the GCS notices after
            alive = {n["NodeID"]: n.get("Alive") for n in ray.nodes()}
            if not alive.get(node.node_id):
                return True
            time.sleep(0.5)
        return False

    def close(self) -> None:
        """Leave the cluster (it keeps running)."""
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False


def _class_name(members: list[Node]) -> str:
    hosts = sorted({n.hostname for n in members})
    return f"env_id {members[0].env_id} ({', '.join(hosts)})"


def _probe_main(backends: list[str]) -> None:
    """``python -m costbench.harness.execute.ray --probe [NAME,...]``: this machine's fingerprint and the probes
    of those backends (default: all) as JSON."""
    from costbench.harness.machine.env import fingerprint

    table = probe_machine(backends or None)
    print(json.dumps({"fingerprint": fingerprint(), "probes": availability_to_dict(table)}, default=str))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] != "--probe":
        sys.exit("usage: python -m costbench.harness.execute.ray --probe [BACKEND,...]")
    _probe_main([b for b in (sys.argv[2] if len(sys.argv) == 3 else "").split(",") if b])
