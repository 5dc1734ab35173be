"""Sessions for dynamic batching (``Backend.prepare_batched``): every batch of 1..max_batch queries, real runtimes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from costbench.backends.base import PerBatchSession
from costbench.backends.onnxruntime_backend import OnnxRuntimeBackend
from costbench.backends.openvino_backend import OpenVinoBackend
from costbench.backends.torch_backend import TorchBackend
from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH, Artifact, InputSpec
from costbench.harness.measure.scenarios.registry import make_scenario
from costbench.harness.build.zoo.base import SampleSet

CASES = [
    (OnnxRuntimeBackend, FORMAT_ONNX, {}),
    (OpenVinoBackend, FORMAT_OPENVINO, {"inference_precision": "f32"}),
    (OpenVinoBackend, FORMAT_ONNX, {"inference_precision": "f32"}),
    (TorchBackend, FORMAT_TORCH, {"threads": torch.get_num_threads()}),
]


@pytest.mark.parametrize("backend_cls, fmt, options", CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_a_batched_session_runs_every_batch_size_and_matches_eager(tiny, rng, backend_cls, fmt, options):
    backend = backend_cls()
    session = backend.prepare_batched(tiny.artifacts[fmt], backend.parse_options(options), 1, 4)
    # Several queries of the fixed-seed model stacked into one batch give each query's own answer.
    for rows in (1, 3, 4, 2):
        x = rng.standard_normal((rows, *tiny.input_shape)).astype(np.float32)
        with torch.inference_mode():
            expected = tiny.module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run({"input": x})[0], expected, atol=1e-4, rtol=0)
    if backend_cls is OnnxRuntimeBackend:  # one session over the dynamic batch axis
        assert not isinstance(session, PerBatchSession)
    else:  # one static-shape session per batch size
        assert session.info()["batch_sizes_prepared"] == [1, 2, 3, 4]
        with pytest.raises(ValueError, match=r"no session prepared for a batch of 5; prepared: \[1, 2, 3, 4\]"):
            session.run({"input": rng.standard_normal((5, *tiny.input_shape)).astype(np.float32)})
    session.close()


def test_onnxruntime_refuses_to_batch_a_graph_with_a_fixed_batch(tiny, tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(tiny.module, (torch.zeros(1, *tiny.input_shape),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    artifact = Artifact(FORMAT_ONNX, path, "test", [InputSpec("input", tiny.input_shape)], ["logits"])
    backend = OnnxRuntimeBackend()
    with pytest.raises(ValueError, match=r"cannot batch up to 4 queries: the ONNX graph fixed.onnx fixes the batch "
                                         r"dimension of \{'input': 1\}"):
        backend.prepare_batched(artifact, backend.parse_options({}), 1, 4)
    backend.prepare_batched(artifact, backend.parse_options({}), 1, 1).close()  # no batching: fine


@pytest.mark.parametrize("backend_cls, fmt, options", CASES[:2], ids=["onnxruntime", "openvino"])
def test_the_server_scenario_batches_on_a_real_runtime(tiny, rng, backend_cls, fmt, options):
    backend = backend_cls()
    session = backend.prepare_batched(tiny.artifacts[fmt], backend.parse_options(options), 1, 4)
    data = SampleSet({"input": rng.standard_normal((16, *tiny.input_shape)).astype(np.float32)})
    # 20,000 arrivals/s, far above what one query at a time can be served at on a loaded CPU: batches form.
    r = make_scenario({"kind": "server", "target_qps": 20_000, "slo_ms": 1000, "min_count": 400,
                       "min_duration_s": 0, "max_batch": 4, "max_queue_delay_ms": 1.0}).run(session, data, 1)
    hist = r.details["batching"]["batch_size_histogram"]
    assert r.queries == 400 and sum(k * c for k, c in hist.items()) == 400 and set(hist) <= {1, 2, 3, 4}
    assert hist.get(4, 0) > 0 and len(r.series_ns["service_time"]) == sum(hist.values())
    session.close()
