"""The worker's steps one at a time, on the real ONNX Runtime backend and real (tiny) ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from costbench.backends.registry import get_backend
from costbench.core.artifacts import FORMAT_ONNX, Artifact, InputSpec
from costbench.harness.execute.plan import Case
from costbench.harness.measure.worker import (CaseInputs, artifact_metrics, gpu_metrics, gpu_monitor, load_model,
                                      load_session, mark_memory_baseline, measure_session, memory_metrics)
from costbench.harness.build.zoo.base import SOURCE_ONNX, ModelBundle, SampleSet

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)
SINGLE_STREAM = {"kind": "single_stream", "warmup_count": 2, "min_count": 5, "min_duration_s": 0.0}


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def lookup_onnx(tmp_path_factory) -> Path:
    """A one-node graph, Gather(TABLE, input): ONNX Runtime rejects an index outside the table's 10 rows at run time."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input"], ["out"], axis=0)], "lookup",
        [helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1, 4])],
        [numpy_helper.from_array(TABLE, "table")])
    return _save(graph, tmp_path_factory.mktemp("lookup") / "lookup.onnx")


def _case(measure_accuracy: bool, batch_size: int = 1, model_spec: dict | None = None) -> Case:
    return Case(model="lookup", variant="fp32", backend="onnxruntime", device="cpu", scenario="single_stream",
                batch_size=batch_size, backend_name="onnxruntime", recipe="fp32", recipe_options={},
                backend_options={"threads": 1}, model_spec=model_spec or {"id": "lookup"},
                scenario_spec=SINGLE_STREAM, artifact_format=FORMAT_ONNX, timeout_s=60,
                measure_accuracy=measure_accuracy)


def _inputs(path: Path, indices: list[int], with_reference: bool) -> CaseInputs:
    spec = [InputSpec("input", (1,), "int64")]
    data = SampleSet({"input": np.asarray(indices, dtype=np.int64).reshape(-1, 1)}, description="table rows")
    bundle = ModelBundle(name="lookup", task="generic", inputs=spec, outputs=["out"], calibration=data,
                         evaluation=data, source_hash="lookup", source_kind=SOURCE_ONNX, onnx_path=path)
    artifact = Artifact(format=FORMAT_ONNX, path=path, key="lookup", inputs=spec, outputs=["out"],
                        size_bytes=path.stat().st_size)
    reference = TABLE[np.asarray(indices)][:, None, :] if with_reference else None  # the graph's (N, 1, 4)
    return CaseInputs(bundle, artifact, reference, built={})


def _ort_session(artifact: Artifact, case: Case):
    backend = get_backend("onnxruntime")
    return load_session(backend, backend.parse_options(case.backend_options), artifact, case)


def test_the_session_is_closed_when_the_scenario_raises(lookup_onnx):
    # Sample 0 is a valid row, so the first inference runs; the scenario's warm-up reaches sample 1, out of range.
    case = _case(measure_accuracy=False)
    inputs = _inputs(lookup_onnx, [0, 99, 98, 97], with_reference=False)
    session, load_row = _ort_session(inputs.artifact, case)
    assert load_row["metric"] == "load_time" and load_row["value"] > 0
    with pytest.raises(Exception, match="out of") as failure:
        measure_session(session, case, inputs)
    assert any(Path(entry.path).parent.name == "scenarios" for entry in failure.traceback)  # raised in the scenario
    assert session._session is None  # OnnxRuntimeSession.close drops its InferenceSession


def test_measure_session_rows_in_measuring_order_and_the_session_closed(lookup_onnx):
    case = _case(measure_accuracy=True)
    inputs = _inputs(lookup_onnx, list(range(10)), with_reference=True)
    session, _ = _ort_session(inputs.artifact, case)
    measured = measure_session(session, case, inputs)
    names = [m["metric"] for m in measured.metrics]
    assert names[0] == "first_inference"
    first_timing = names.index("latency_p50")
    accuracy = names[1:first_timing]
    assert "cosine_similarity_min" in accuracy and "max_abs_error" in accuracy
    assert {m["value"] for m in measured.metrics if m["metric"] == "max_abs_error"} == {0.0}
    # The scenario's rows, then what else took the CPU while it measured (read on Linux only).
    from costbench.harness.machine.contention import read

    tail = ["throughput", "queries", "duration"] + (["cpu_contention"] if read() is not None else [])
    assert names[-len(tail):] == tail and "peak_device_memory" not in names  # CPU
    assert measured.info["providers"] == ["CPUExecutionProvider"]
    assert measured.timing.as_dict() == session.timing.as_dict()
    assert session._session is None


def test_without_a_reference_there_are_no_accuracy_rows(lookup_onnx):
    case = _case(measure_accuracy=False)
    inputs = _inputs(lookup_onnx, list(range(10)), with_reference=False)
    session, _ = _ort_session(inputs.artifact, case)
    names = [m["metric"] for m in measure_session(session, case, inputs).metrics]
    assert names[:2] == ["first_inference", "latency_p50"]


def test_load_model_rejects_a_batch_the_onnx_graph_does_not_take(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["out"])], "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])])
    spec = {"id": "fixed", "source": "onnx", "path": str(_save(graph, tmp_path / "fixed.onnx"))}
    assert load_model(_case(False, batch_size=2, model_spec=spec), tmp_path / "cache").details["fixed_batch"] == 2
    with pytest.raises(ValueError, match="fixed batch size of 2 .* asks for batch 4"):
        load_model(_case(False, batch_size=4, model_spec=spec), tmp_path / "cache")


def test_artifact_metrics_report_a_build_only_when_this_case_built(lookup_onnx):
    inputs = _inputs(lookup_onnx, [0], with_reference=False)
    rows = artifact_metrics(inputs.artifact, {})
    assert [r["metric"] for r in rows] == ["model_size"] and rows[0]["value"] == lookup_onnx.stat().st_size
    rows = artifact_metrics(inputs.artifact, {"build_time_s": 1.5})
    assert [(r["metric"], r["value"]) for r in rows][1:] == [("build_time", 1.5)]
    assert inputs.artifact.build_time_s == 1.5 and inputs.artifact.cached is False


def test_peak_rss_covers_what_follows_the_baseline():
    from costbench.harness.measure.worker import _read_status_kb

    baseline = mark_memory_baseline()
    if not baseline.rss_reset:
        pytest.skip("this kernel cannot reset the RSS high-water mark (/proc/self/clear_refs)")
    resident_mib = _read_status_kb("VmRSS") / 1024
    block = np.ones(96 * 2**20, dtype=np.uint8)  # touched, so resident
    rows = {r["metric"]: r for r in memory_metrics(baseline)}
    del block
    assert rows["peak_rss"]["value"] >= resident_mib + 90
    assert rows["peak_rss"]["details"]["scope"].startswith("load+inference")
    assert rows["process_peak_rss"]["value"] >= rows["peak_rss"]["value"]


def test_a_cpu_case_takes_no_gpu_snapshot():
    with gpu_monitor("cpu") as gpu_state:
        start, end = gpu_state(), gpu_state()
    assert start == end == {"gpus": [], "reason": "CPU case"}
    assert gpu_metrics(start, end) == []


def test_a_gpu_case_snapshots_through_nvml_or_says_why_not():
    with gpu_monitor("cuda") as gpu_state:
        start = gpu_state()
    assert start["gpus"] or start["reason"]
    if start["gpus"]:
        assert [m["metric"] for m in gpu_metrics(start, start)] == ["gpu_throttled"]
