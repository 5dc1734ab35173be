"""The executorch backend on the real ExecuTorch runtime, with a tiny model lowered to XNNPACK for real."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pydantic
import pytest

pytest.importorskip("executorch", reason="executorch is not installed: pip install 'costbench[edge]'")

import torch  # noqa: E402

from costbench.backends import load_registry  # noqa: E402
from costbench.backends.base import BackendOptions  # noqa: E402
from costbench.backends.executorch_backend import ExecuTorchBackend, ExecuTorchOptions  # noqa: E402
from costbench.core.artifacts import FORMAT_EXECUTORCH, FORMAT_ONNX, Artifact, InputSpec  # noqa: E402
from costbench.harness.build.compress.executorch_export import MAX_BATCH, export_pte  # noqa: E402
from costbench.harness.build.zoo.base import SampleSet  # noqa: E402
from edge_helpers import SHAPE, prepare  # noqa: E402
from edge_helpers import eager as _eager, fresh as _fresh  # noqa: E402


class _PerSampleFlatten(torch.nn.Module):
    """Flattens the whole batch into one vector: only a batch of 1 reaches the Linear layer."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(int(np.prod(SHAPE)), 4)

    def forward(self, x):
        return self.linear(x.reshape(-1))[None]


def _tiny_module():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10),
    ).eval()


def _samples(n: int = 8) -> SampleSet:
    return SampleSet({"input": np.random.default_rng(0).standard_normal((n, *SHAPE)).astype(np.float32)})


def _artifact(path, provenance=None) -> Artifact:
    return Artifact(format=FORMAT_EXECUTORCH, path=path, key="test", inputs=[InputSpec("input", SHAPE)],
                    outputs=["logits"], provenance=provenance or {})


@pytest.fixture(scope="module")
def tiny_pte(tmp_path_factory):
    """(eager module, artifact): the tiny CNN exported with a dynamic batch and lowered to XNNPACK."""
    module = _tiny_module()
    path = tmp_path_factory.mktemp("et") / "model.pte"
    provenance = export_pte(module, [InputSpec("input", SHAPE)], _samples(), path, "tiny")
    return module, _artifact(path, provenance)


@pytest.fixture
def restore_threadpool():
    """The backend resizes the process-wide ExecuTorch threadpool (fine in a per-case child, not in pytest)."""
    from executorch.extension.pybindings import _C

    before = _C._threadpool_get_thread_count()
    yield
    if _C._threadpool_get_thread_count() != before:
        _C._unsafe_reset_threadpool(before)


_prepare = functools.partial(prepare, ExecuTorchBackend)


def test_registered_through_the_entry_point():
    entry = load_registry()["executorch"]
    assert entry.load_error == ""
    assert type(entry.backend) is ExecuTorchBackend
    assert entry.target == "costbench.backends.executorch_backend:ExecuTorchBackend"


def test_probe_reports_versions_and_the_xnnpack_delegate():
    availability = ExecuTorchBackend().probe()
    assert availability.available, availability.reason
    assert availability.versions["executorch"] and availability.versions["torch"]
    assert "XnnpackBackend" in availability.versions["delegates"].split(",")


def test_probe_says_what_to_install_when_executorch_is_missing(monkeypatch):
    # None in sys.modules makes an import raise ModuleNotFoundError, as if never installed.
    for name in [m for m in sys.modules if m == "executorch" or m.startswith("executorch.")] + ["executorch"]:
        monkeypatch.setitem(sys.modules, name, None)
    availability = ExecuTorchBackend().probe()
    assert not availability.available
    assert availability.reason == "executorch is not installed: pip install 'costbench[edge]'"


def test_probe_names_a_missing_xnnpack_delegate(monkeypatch):
    from executorch.extension.pybindings import _C

    monkeypatch.setattr(_C, "_is_available", lambda name: False)
    availability = ExecuTorchBackend().probe()
    assert not availability.available
    assert "no XnnpackBackend delegate registered" in availability.reason
    assert "registered: " in availability.reason


@pytest.mark.parametrize("batch_size", [1, 3, 20])  # 20: above the 15 that torch's conv guard would plan for
def test_outputs_match_torch_eager(tiny_pte, batch_size, rng):
    module, artifact = tiny_pte
    session = _prepare(artifact, batch_size)
    for _ in range(2):  # fresh inputs each time: a stale or cached output cannot pass
        x = _fresh(rng, batch_size)
        out = session.run({"input": x})
        assert len(out) == 1 and isinstance(out[0], np.ndarray) and out[0].shape == (batch_size, 10)
        np.testing.assert_allclose(out[0], _eager(module, x), atol=1e-5, rtol=0)
    session.close()


def test_inputs_of_another_dtype_are_cast(tiny_pte, rng):
    module, artifact = tiny_pte
    x = _fresh(rng, 2)
    out = _prepare(artifact, 2).run({"input": x.astype(np.float64)})
    np.testing.assert_allclose(out[0], _eager(module, x), atol=1e-5, rtol=0)


def test_missing_input_names_the_expected_inputs(tiny_pte, rng):
    with pytest.raises(KeyError, match="'input'"):
        _prepare(tiny_pte[1], 1).run({"image": _fresh(rng, 1)})


def test_outputs_of_consecutive_runs_do_not_alias(tiny_pte, rng):
    # The program writes every call into the same planned output buffer; a returned view would
    # change under the caller when the next query runs.
    module, artifact = tiny_pte
    session = _prepare(artifact, 2)
    x1, x2 = _fresh(rng, 2), _fresh(rng, 2)
    first = session.run({"input": x1})[0]
    kept = first.copy()
    second = session.run({"input": x2})[0]
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_allclose(first, _eager(module, x1), atol=1e-5, rtol=0)


def test_a_batch_above_the_program_bound_is_refused_with_the_bound(tiny_pte):
    with pytest.raises(ValueError, match=f"at most {MAX_BATCH}"):
        _prepare(tiny_pte[1], MAX_BATCH + 1)


def test_a_static_batch_program_says_why_it_is_static(tmp_path, rng):
    # Flattening the batch into the features cannot take a dynamic batch: the export falls back to batch 1.
    module = _PerSampleFlatten().eval()
    path = tmp_path / "model.pte"
    provenance = export_pte(module, [InputSpec("input", SHAPE)], _samples(), path, "flat")
    assert provenance["batch"] == "static" and provenance["max_batch"] == 1
    assert provenance["dynamic_batch_error"]
    artifact = _artifact(path, provenance)
    x = _fresh(rng, 1)
    np.testing.assert_allclose(_prepare(artifact, 1).run({"input": x})[0], _eager(module, x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at most 1 .*static batch; a dynamic batch did not export"):
        _prepare(artifact, 2)


def test_threads_size_the_threadpool(tiny_pte, restore_threadpool, rng):
    session = _prepare(tiny_pte[1], 1, threads=1)
    info = session.info()
    assert info["threads"] == 1
    assert (info["delegate"], info["batch_size"], info["program_max_batch"]) == ("XnnpackBackend", 1, MAX_BATCH)
    x = _fresh(rng, 1)
    np.testing.assert_allclose(session.run({"input": x})[0], _eager(tiny_pte[0], x), atol=1e-5, rtol=0)


def test_options_reject_unknown_keys_and_zero_threads():
    backend = ExecuTorchBackend()
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        backend.parse_options({"bogus": 1})
    with pytest.raises(pydantic.ValidationError, match="threads"):
        backend.parse_options({"threads": 0})
    assert isinstance(backend.parse_options({}), ExecuTorchOptions)
    assert isinstance(backend.parse_options({}), BackendOptions)


def test_other_formats_and_devices_are_refused(tiny_pte):
    backend = ExecuTorchBackend()
    onnx = Artifact(format=FORMAT_ONNX, path=tiny_pte[1].path, key="test", inputs=tiny_pte[1].inputs, outputs=[])
    with pytest.raises(ValueError, match="format 'onnx' is not supported"):
        backend.prepare(onnx, backend.parse_options({}), 1)
    with pytest.raises(ValueError, match="device 'cuda'"):
        backend.prepare(tiny_pte[1], backend.parse_options({}), 1, device="cuda")
    assert backend.accepts(["onnx", FORMAT_EXECUTORCH]) == FORMAT_EXECUTORCH
