"""The Ray executor on a real Ray cluster (Ray's own test cluster: a head and more nodes on 127.0.0.1).

Nodes differ by labels, caches and which backends they have (the test-only ``faulty`` backend is
registered on some nodes only), so placement, planning per node, streaming, node loss and resume are
all checked against real Ray, with the real worker measuring real models.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

# Read when Ray is imported: keeps the test cluster on loopback (see the README's "Many machines").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the Ray executor's tests need Ray: pip install 'costbench[fleet]'")
from ray.cluster_utils import Cluster  # noqa: E402

from costbench.harness.execute.executor import ExecutorError  # noqa: E402
from costbench.harness.execute.ray import RayExecutor  # noqa: E402
from costbench.harness.execute.plan import make_plan  # noqa: E402
from costbench.harness.execute.runner import run_plan  # noqa: E402
from costbench.harness.results.store import RunFile, load_results  # noqa: E402
from costbench.harness.execute.load import load_suite  # noqa: E402

PLUGINS = Path(__file__).parents[2] / "plugins"
FAULTY = {"COSTBENCH_EXTRA_BACKENDS": "faulty=faulty_backend:FaultyBackend",
          "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))}
PLAIN = {"COSTBENCH_EXTRA_BACKENDS": ""}
# A killed node is declared dead in about a second instead of Ray's default 15 s or so.
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000,
               "health_check_initial_delay_ms": 0}

SCENARIOS = """
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 20
min_duration_s = 0.05

[[scenarios]]
kind = "offline"
warmup_count = 1
min_count = 3
min_duration_s = 0.05
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and two nodes: every node measures; only node 'b' has the faulty backend. Each has its own cache."""
    root = tmp_path_factory.mktemp("fleet")
    caches = {name: root / f"cache-{name}" for name in ("head", "a", "b")}
    c = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False, "labels": {"role": "head"},
        "env_vars": {**PLAIN, "COSTBENCH_CACHE_DIR": str(caches["head"])}, "_system_config": FAST_HEALTH})
    nodes = {"head": c.head_node}
    nodes["a"] = c.add_node(node_ip_address="127.0.0.1", num_cpus=1, labels={"role": "worker"},
                            env_vars={**PLAIN, "COSTBENCH_CACHE_DIR": str(caches["a"])})
    nodes["b"] = c.add_node(node_ip_address="127.0.0.1", num_cpus=1, labels={"role": "worker", "faulty": "yes"},
                            env_vars={**FAULTY, "COSTBENCH_CACHE_DIR": str(caches["b"])})
    c.wait_for_nodes()
    yield c, nodes, caches
    c.shutdown()


def write_suite(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


# What depends on the moment, not on where a case ran: a build only the first process does, and whether
# something else wanted the CPU (a loaded test machine flags some processes in one run and not the other).
MOMENTARY = {"build_time", "cpu_contention", "contended_processes"}
# A case's row, not a process's: it goes on the record of whichever of the case's processes ends last, and that
# order differs between a fleet and a local run.
PER_CASE = {"unstable"}


def by_key(records):
    """Records by case and process (the first process alone measures accuracy; the order processes end in
    differs between a fleet and a local run)."""
    return {(r["case"]["model"], r["case"]["variant"], r["case"]["backend"], r["case"]["scenario"],
             r["case"]["batch_size"], r["process"]): r for r in records}


def test_a_suite_runs_on_every_node_and_equals_the_local_run(cluster, tmp_path):
    c, nodes, caches = cluster
    suite = load_suite(write_suite(tmp_path / "digits.toml", """
name = "fleet-digits"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{name = "onnxruntime", threads = 1}]
batch_sizes = [1, 2]
timeout_s = 300
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 2
""" + SCENARIOS))
    with RayExecutor(c.address) as ex:
        cases = ex.plan(suite)
        assert [x.status for x in cases] == ["planned"] * 4
        (env_id,) = {x.machine for x in cases}  # one machine class: three nodes of one host
        all_ids = {n.node_id for n in nodes.values()}
        assert all({n.node_id for n in ex.placement_of(x)} == all_ids for x in cases)
        streamed = []
        summary = run_plan(suite, cases, tmp_path / "fleet", executor=ex, on_done=lambda i, o: streamed.append(i))
    assert sorted(streamed) == list(range(8))  # each case's two processes, each reported as it ends
    run = RunFile(summary.run_file)
    header, records = run.header(), run.cases()
    assert sorted((r["case"]["case_id"], r["process"]) for r in records) == sorted(
        (x.case_id, k) for x in cases for k in (0, 1))
    assert header["executor"]["kind"] == "ray" and env_id in header["executor"]["machines"]
    assert all(r["status"] == "ok" for r in records), [r["reason"] for r in records]
    used = {r["info"]["node"]["node_id"] for r in records}
    assert used == all_ids, "every node measures"
    for r in records:
        node = r["info"]["node"]
        assert r["env_id"] == node["env_id"] == env_id and node["hostname"] and node["ip"] == "127.0.0.1"
    # Artifacts were built on (and cached by) the nodes that measured them.
    assert all(list((cache / "artifacts").iterdir()) for cache in caches.values())

    local = run_plan(suite, make_plan(suite), tmp_path / "local", cache_dir=tmp_path / "local-cache")
    local_records = by_key(RunFile(local.run_file).cases())
    fleet_records = by_key(records)
    assert set(local_records) == set(fleet_records)
    for key, rec in fleet_records.items():
        mine, theirs = ({m["metric"] for m in r["metrics"]} - MOMENTARY - PER_CASE for r in (rec, local_records[key]))
        assert rec["status"] == local_records[key]["status"] and mine == theirs, key
    per_case = lambda recs: sorted((k[:-1], m["metric"]) for k, r in recs.items() for m in r["metrics"]
                                   if m["metric"] in PER_CASE)
    assert per_case(fleet_records) == per_case(local_records)
    fleet_df, local_df = load_results(tmp_path / "fleet"), load_results(tmp_path / "local")
    assert list(fleet_df.columns) == list(local_df.columns)
    strip = lambda df: sorted(map(tuple, df[~df.metric.isin(MOMENTARY)][["model", "variant", "backend", "scenario",
                                                                        "batch_size", "metric", "unit"]].values))
    assert strip(fleet_df) == strip(local_df)


def test_a_node_without_a_backend_is_never_sent_its_cases(cluster, tmp_path, plugin_backends):
    c, nodes, _ = cluster
    path = write_suite(tmp_path / "mixed.toml", """
name = "mixed"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{name = "onnxruntime", threads = 1}, {name = "faulty", label = "only-on-b"}]
timeout_s = 300
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
""")
    plan = subprocess.run([sys.executable, "-m", "costbench.commands.cli", "plan", str(path), "--executor", "ray",
                           "--address", c.address], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "250"})
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "3 Ray nodes" in plan.stdout and "faulty" in plan.stdout  # the nodes lacking it say so
    suite = load_suite(path)
    with RayExecutor(c.address) as ex:
        cases = ex.plan(suite)
        where = {x.backend: {n.node_id for n in ex.placement_of(x)} for x in cases}
        assert where["only-on-b"] == {nodes["b"].node_id} and len(where["onnxruntime"]) == 3
        summary = run_plan(suite, cases, tmp_path / "results", executor=ex)
    got = {o.case.backend: o for o in summary.outcomes}
    assert all(o.status == "ok" for o in got.values()), [o.reason for o in got.values()]
    assert got["only-on-b"].info["node"]["node_id"] == nodes["b"].node_id


def test_a_case_whose_failure_repeats_starts_no_more_processes_on_the_cluster(cluster, tmp_path, plugin_backends):
    c, nodes, _ = cluster
    suite = load_suite(write_suite(tmp_path / "repeats.toml", """
name = "repeats"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 3
accuracy = false
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{name = "faulty", label = "raises", fail = "raise"}]
timeout_s = 300
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
"""))
    with RayExecutor(c.address) as ex:
        summary = run_plan(suite, ex.plan(suite), tmp_path / "results", executor=ex)
    records = sorted(RunFile(summary.run_file).cases(), key=lambda r: r["process"])
    assert [r["status"] for r in records] == ["failed", "skipped", "skipped"]
    assert records[0]["info"]["node"]["node_id"] == nodes["b"].node_id and records[0]["info"]["stage"] == "prepare"
    assert all(r["reason"].startswith("not started: process 0 failed while preparing") for r in records[1:])
    (case,) = summary.outcomes
    assert case.status == "failed" and "(2 of 3 processes not started:" in case.reason


def test_bad_addresses_and_unrunnable_suites_fail_before_any_case(cluster, tmp_path):
    c, _, _ = cluster
    path = write_suite(tmp_path / "s.toml", """
name = "s"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
models = ["digits-cnn"]
variants = ["fp32"]
backends = ["onnxruntime"]
""" + SCENARIOS)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "costbench.commands.cli", "run", str(path), "--out", str(out),
                           "--executor", "ray", "--address", "127.0.0.1:1"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and "unreachable" in proc.stderr and "127.0.0.1:1" in proc.stderr, proc.stderr
    assert not out.exists(), "nothing written"

    with RayExecutor(c.address, placement=["label:role=nobody"]) as ex:
        with pytest.raises(ExecutorError, match="no node of the Ray cluster can measure"):
            ex.plan(load_suite(path))
        ex.placement = ["every-class"]
        trt = write_suite(tmp_path / "trt.toml", """
name = "trt"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{name = "tensorrt", device = "cuda"}]
""")
        with pytest.raises(ExecutorError, match="no node of the Ray cluster can run any case.*tensorrt"):
            ex.plan(load_suite(trt))


def _measuring(case_id: str) -> bool:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "costbench.harness.measure.worker" in cmd and case_id in cmd:
            return True
    return False


def test_the_driver_killed_mid_run_resumes_and_redoes_nothing(cluster, tmp_path, plugin_backends):
    c, _, _ = cluster
    gate = tmp_path / "hold"
    gate.touch()
    path = write_suite(tmp_path / "resumable.toml", f"""
name = "resumable"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
models = ["digits-cnn"]
variants = ["fp32"]
timeout_s = 300
backends = [{{name = "faulty", label = "first"}}, {{name = "faulty", label = "slow", fail = "slow", block_while = "{gate}"}},
            {{name = "faulty", label = "last"}}]
[executor]
kind = "ray"
address = "{c.address}"
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
""")
    out = tmp_path / "results"
    cli = [sys.executable, "-m", "costbench.commands.cli"]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([*cli, "run", str(path), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline, run_file = time.monotonic() + 240, None
    while time.monotonic() < deadline and run_file is None:  # only node b has 'faulty': one case at a time there
        files = list((out / "runs").glob("*.jsonl")) if (out / "runs").exists() else []
        if files and len(RunFile(files[0]).cases()) == 1:
            run_file = files[0]
        time.sleep(0.2)
    assert run_file is not None, proc.communicate()[0] if proc.poll() is not None else "no case recorded"
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Ray ends a dead driver's tasks, and the case's process dies with its task: nothing measures on as an orphan.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _measuring("costbench-case-"):
        time.sleep(0.2)
    assert not _measuring("costbench-case-")
    gate.unlink()
    resumed = subprocess.run([*cli, "run", "--resume", run_file.stem, "--out", str(out)], capture_output=True,
                             text=True, timeout=300, env=env)
    assert resumed.returncode == 0 and "1 processes recorded, 2 to go" in resumed.stdout, resumed.stdout + resumed.stderr
    records = RunFile(run_file).cases()
    assert sorted(r["case"]["backend"] for r in records) == ["first", "last", "slow"]
    assert all(r["status"] == "ok" and r["info"]["node"]["env_id"] == r["env_id"] for r in records)


def test_a_node_lost_mid_case_costs_that_case_or_is_rerun_once(cluster, tmp_path, plugin_backends):
    """Last: it removes nodes. Two extra 'doomed' nodes; the one measuring is killed mid-case."""
    c, _, _ = cluster
    doomed = [c.add_node(node_ip_address="127.0.0.1", num_cpus=1, labels={"role": "doomed"}, env_vars=FAULTY)
              for _ in range(2)]
    c.wait_for_nodes()

    def run_and_kill(retry: bool):
        gate = tmp_path / f"hold-{retry}"
        gate.touch()
        suite = load_suite(write_suite(tmp_path / f"doomed-{retry}.toml", f"""
name = "doomed"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
models = ["digits-cnn"]
variants = ["fp32"]
timeout_s = 300
backends = [{{name = "faulty", label = "slow", fail = "slow", block_while = "{gate}"}}]
[executor]
kind = "ray"
placement = "label:role=doomed"
retry_lost = {str(retry).lower()}
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
"""))
        killed = {}
        with RayExecutor(c.address, placement=suite.executor.placement, retry_lost=retry) as ex:
            (case,) = ex.plan(suite)

            def kill_when_measuring():
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline and not (case.job_id in ex.in_flight() and _measuring(case.case_id)):
                    time.sleep(0.2)
                node_id = ex.in_flight()[case.job_id].node_id
                victim = next(n for n in doomed if n.node_id == node_id)
                killed["node_id"] = node_id
                c.remove_node(victim, allow_graceful=False)
                doomed.remove(victim)
                if retry:  # a re-run elsewhere need not wait
                    gate.unlink()
                # Without retry the gate stays until the run ends: opened now, a loaded machine could let the
                # dying node's case finish (ok) before Ray saw the node go, which is a race, not a lost node.

            killer = threading.Thread(target=kill_when_measuring)
            killer.start()
            summary = run_plan(suite, [case], tmp_path / f"results-{retry}", executor=ex)
            killer.join()
            gate.unlink(missing_ok=True)
        return summary.outcomes[0], killed["node_id"], RunFile(summary.run_file).cases()[0]

    rerun, first_victim, _ = run_and_kill(retry=True)
    assert rerun.status == "ok", rerun.reason
    assert [n["node_id"] for n in rerun.info["lost_nodes"]] == [first_victim]
    assert rerun.info["node"]["node_id"] == doomed[0].node_id != first_victim

    lost, victim, record = run_and_kill(retry=False)
    assert victim == record["info"]["node"]["node_id"]
    assert lost.status == record["status"] == "failed" and record["reason"].startswith("node lost")
    assert victim[:12] in record["reason"] and record["env_id"] in record["reason"]


def test_a_local_run_never_imports_ray(tmp_path):
    code = ("import sys\n"
            "from costbench.commands import cli\n"
            "from costbench.harness.execute.registry import executor_for\n"
            "from costbench.harness.suite.schema import ExecutorSpec\n"
            "executor_for(None); executor_for(ExecutorSpec())\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_bad_executor_section_names_the_key(tmp_path):
    from costbench.harness.suite.schema import SuiteError

    path = write_suite(tmp_path / "bad.toml", """
name = "bad"
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
models = ["digits-cnn"]
variants = ["fp32"]
backends = ["onnxruntime"]
[executor]
kind = "ray"
placement = "rack=a"
""")
    with pytest.raises(SuiteError, match=r"executor\.placement.*'label:KEY=VALUE'"):
        load_suite(path)
