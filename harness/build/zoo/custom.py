"""Models users bring: an ONNX file (``source="onnx"``), a LiteRT file (``source="tflite"``) or a torch factory
(``source="torch"``).

Data comes from the suite's ``.npz`` when given (arrays keyed by input name, optional
``labels``; the first half calibrates, the second half evaluates), else synthetic inputs from a
fixed seed, flagged with ``details["synthetic_data"] = True`` so reports can say that accuracy
is parity with fp32 only. Heavy libraries are imported inside functions: planning imports this
module and must stay light.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from costbench.core.artifacts import InputSpec, file_sha256
from costbench.core.tflite_files import read_inputs, read_outputs
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TFLITE, SOURCE_TORCH, ModelBundle, SampleSet

SYNTHETIC_SEED = 0
SYNTHETIC_SAMPLES = 64  # half calibration, half evaluation
SYNTHETIC_INT_HIGH = 10  # integer inputs (ids, indices) are drawn from [0, 10): valid for any vocabulary
LABELS_KEY = "labels"


def state_dict_hash(state_dict: dict[str, Any], salt: str = "") -> str:
    """SHA-256 over ``salt`` and every tensor's name, dtype, shape and raw bytes."""
    import torch

    h = hashlib.sha256(salt.encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            # Reinterpret as bytes: numpy has no bfloat16, so never go through the tensor's own dtype.
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- ONNX


def read_onnx(model_id: str, path: Path):
    """Load and check an ONNX file; ValueError naming the model and the path when it is missing or invalid."""
    import onnx

    if not path.exists():
        raise ValueError(f"model {model_id!r}: ONNX file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"model {model_id!r}: {path} is not a file")
    try:
        proto = onnx.load(str(path))
        # The path form also checks models with external data and those over 2 GB.
        onnx.checker.check_model(str(path))
    except Exception as err:  # protobuf DecodeError, ValidationError, OSError: all mean the same to the user
        raise ValueError(f"model {model_id!r}: {path} is not a valid ONNX file: {err}") from None
    return proto


def _graph_inputs(proto) -> list:
    """Graph inputs that are real inputs (old exporters also list the initializers as inputs)."""
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def onnx_inputs(model_id: str, proto) -> list[InputSpec]:
    """Input specs read from the graph.

    The first dimension is the batch; any other dimension that is symbolic or unknown is an
    error asking for ``inputs`` in the suite, since synthetic data needs concrete shapes.
    """
    from onnx import helper

    specs = []
    for value in _graph_inputs(proto):
        where = f"model {model_id!r}: input {value.name!r}"
        if not value.type.HasField("tensor_type"):
            raise ValueError(f"{where} is not a tensor; only tensor inputs are supported")
        ttype = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        dims = list(ttype.shape.dim) if ttype.HasField("shape") else None
        if not dims:
            raise ValueError(f"{where} has no known rank; give its shape in the suite's 'inputs'")
        rest = dims[1:]
        unknown = [i + 1 for i, d in enumerate(rest) if not d.HasField("dim_value")]
        if unknown:
            names = [rest[i - 1].dim_param or "?" for i in unknown]
            raise ValueError(
                f"{where} has symbolic dimensions {names} at axes {unknown} (only axis 0, the batch, may be "
                f"symbolic); give its per-sample shape in the suite's 'inputs'"
            )
        specs.append(InputSpec(value.name, tuple(d.dim_value for d in rest), dtype))
    return specs


def fixed_batch(model_id: str, proto) -> int | None:
    """The batch size a graph is pinned to (a concrete first dimension), or None when it is dynamic."""
    sizes = set()
    for value in _graph_inputs(proto):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            sizes.add(dims[0].dim_value)
    if len(sizes) > 1:
        raise ValueError(f"model {model_id!r}: inputs disagree on their fixed batch size: {sorted(sizes)}")
    return next(iter(sizes), None)


def _check_declared_inputs(model_id: str, declared: list[InputSpec], proto) -> None:
    """The suite's ``inputs`` must name exactly the graph's inputs."""
    graph = {v.name for v in _graph_inputs(proto)}
    names = {i.name for i in declared}
    if names != graph:
        raise ValueError(
            f"model {model_id!r}: suite 'inputs' {sorted(names)} do not match the ONNX graph's inputs {sorted(graph)}"
        )


def _output_rank(proto, name: str) -> int | None:
    for value in proto.graph.output:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def load_onnx_model(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    """A bundle for a user's ONNX file; inputs from the suite or, failing that, from the graph."""
    path = Path(spec.path)
    proto = read_onnx(spec.id, path)
    if spec.inputs:
        inputs = [i.to_spec() for i in spec.inputs]
        _check_declared_inputs(spec.id, inputs, proto)
    else:
        inputs = onnx_inputs(spec.id, proto)
    batch = fixed_batch(spec.id, proto)
    outputs = [o.name for o in proto.graph.output]
    calibration, evaluation, data_details = sample_sets(spec, inputs)
    rank = _output_rank(proto, outputs[0])
    if rank is None:  # the graph does not say; run one sample to find out
        rank = _onnx_run_rank(path, evaluation, batch or 1)
    details: dict[str, Any] = {**data_details, "onnx_opset": max((o.version for o in proto.opset_import), default=None)}
    if batch is not None:
        # A graph with a fixed first dimension runs only at that batch size.
        details["fixed_batch"] = batch
    return ModelBundle(
        name=spec.id,
        task="classification" if rank == 2 else "generic",
        inputs=inputs,
        outputs=outputs,
        calibration=calibration,
        evaluation=evaluation,
        source_hash=file_sha256(path),
        source_kind=SOURCE_ONNX,
        onnx_path=path,
        details=details,
    )


def _onnx_run_rank(path: Path, samples: SampleSet, batch: int) -> int:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, samples.batch(batch))[0].ndim


# -------------------------------------------------------------------------------------------- tflite


def tflite_inputs(model_id: str, path: Path, details: list[dict[str, Any]]) -> list[InputSpec]:
    """Input specs read from a .tflite. Axis 0 is the batch; any other dynamic axis (-1) is an error asking for
    ``inputs`` in the suite. A quantized integer input (int8/uint8 with a scale) is declared float32: the data
    is real-valued and the litert backend quantizes it with the model's scale and zero point."""
    specs = []
    for d in details:
        where = f"model {model_id!r}: input {d['name']!r} of {path}"
        signature = d["shape_signature"]
        if not signature:
            raise ValueError(f"{where} is a scalar; give its shape in the suite's 'inputs'")
        dynamic = [i for i, s in enumerate(signature[1:], 1) if s < 0]
        if dynamic:
            raise ValueError(f"{where} has dynamic dimensions at axes {dynamic} (shape signature {signature}; only "
                             "axis 0, the batch, may be dynamic); give its per-sample shape in the suite's 'inputs'")
        dtype = "float32" if d["quantization"] is not None else d["dtype"]
        specs.append(InputSpec(d["name"], tuple(signature[1:]), dtype))
    return specs


def load_tflite_model(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    """A bundle for a user's .tflite; inputs from the suite or, failing that, from the file."""
    path = Path(spec.path)
    try:
        details, outputs = read_inputs(path), read_outputs(path)
    except ValueError as err:
        raise ValueError(f"model {spec.id!r}: {err}") from None
    if spec.inputs:
        inputs = [i.to_spec() for i in spec.inputs]
        names = [d["name"] for d in details]
        if len(inputs) != len(names):
            raise ValueError(f"model {spec.id!r}: suite 'inputs' {[i.name for i in inputs]} do not match the inputs "
                             f"{names} of {path}")
    else:
        inputs = tflite_inputs(spec.id, path, details)
    calibration, evaluation, data_details = sample_sets(spec, inputs)
    rank = len(outputs[0]["shape_signature"]) if outputs else 0
    return ModelBundle(
        name=spec.id,
        task="classification" if rank == 2 else "generic",
        inputs=inputs,
        outputs=[o["name"] for o in outputs],
        calibration=calibration,
        evaluation=evaluation,
        source_hash=file_sha256(path),
        source_kind=SOURCE_TFLITE,
        details={**data_details, "tflite_path": str(path),
                 "tflite_io": {"inputs": details, "outputs": outputs}},
    )


# --------------------------------------------------------------------------------------------- torch


def import_factory(model_id: str, factory: str):
    """The callable named by 'package.module:function'; ValueError saying which part failed."""
    module_name, _, attr = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model {model_id!r}: cannot import {module_name!r} for factory {factory!r}: {err}") from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"model {model_id!r}: {module_name!r} has no attribute {attr!r} (factory {factory!r})")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"model {model_id!r}: factory {factory!r} is not callable")
    return fn


def load_torch_model(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    """A bundle for a user's torch factory; the module is built once and copied for each caller."""
    import torch

    fn = import_factory(spec.id, spec.factory)
    module = fn()
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"model {spec.id!r}: factory {spec.factory!r} returned {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    inputs = [i.to_spec() for i in spec.inputs]
    calibration, evaluation, data_details = sample_sets(spec, inputs)
    with torch.no_grad():
        result = module(*(torch.from_numpy(evaluation.batch(1)[i.name]) for i in inputs))
    outs = _as_tensors(spec, result)
    outputs = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    return ModelBundle(
        name=spec.id,
        task="classification" if outs[0].ndim == 2 else "generic",
        inputs=inputs,
        outputs=outputs,
        calibration=calibration,
        evaluation=evaluation,
        # The factory string stands in for the architecture; the tensors pin the weights.
        source_hash=state_dict_hash(module.state_dict(), salt=spec.factory),
        source_kind=SOURCE_TORCH,
        # A copy each time: a factory with unseeded init would otherwise give different weights per call.
        module_factory=lambda: copy.deepcopy(module),
        details={**data_details, "factory": spec.factory},
    )


def _as_tensors(spec: ModelSpec, result) -> list:
    import torch

    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise ValueError(
            f"model {spec.id!r}: factory {spec.factory!r} builds a module whose forward returns "
            f"{type(result).__name__}; expected a tensor or a tuple of tensors"
        )
    return outs


# ---------------------------------------------------------------------------------------------- data


def sample_sets(spec: ModelSpec, inputs: list[InputSpec]) -> tuple[SampleSet, SampleSet, dict[str, Any]]:
    """(calibration, evaluation, details) from the suite's .npz, or synthetic when there is none."""
    if spec.data is not None:
        return npz_sample_sets(spec.id, Path(spec.data), inputs)
    return synthetic_sample_sets(inputs)


def npz_sample_sets(model_id: str, path: Path, inputs: list[InputSpec]) -> tuple[SampleSet, SampleSet, dict[str, Any]]:
    """Split a user's .npz in half (calibration, evaluation) after checking it against ``inputs``."""
    where = f"model {model_id!r}: data file {path}"
    if not path.is_file():
        raise ValueError(f"{where} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:
        raise ValueError(f"{where} is not a readable .npz: {err}") from None
    expected = {i.name for i in inputs}
    missing = sorted(expected - arrays.keys())
    unknown = sorted(arrays.keys() - expected - {LABELS_KEY})
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"lacks arrays for inputs {missing}")
        if unknown:
            parts.append(f"has arrays {unknown} that match no input")
        raise ValueError(f"{where} {' and '.join(parts)}; expected keys {sorted(expected)} (+ optional '{LABELS_KEY}')")
    data = {}
    for spec in inputs:
        arr = arrays[spec.name]
        if arr.ndim == 0 or tuple(arr.shape[1:]) != tuple(spec.shape):
            raise ValueError(
                f"{where}: array {spec.name!r} has shape {arr.shape}; expected (N, {', '.join(map(str, spec.shape))}) "
                f"for per-sample shape {tuple(spec.shape)}"
            )
        if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
            raise ValueError(f"{where}: array {spec.name!r} is {arr.dtype}; it cannot become the input's {spec.dtype}")
        data[spec.name] = np.ascontiguousarray(arr.astype(spec.dtype, copy=False))
    lengths = {k: len(v) for k, v in data.items()}
    labels = arrays.get(LABELS_KEY)
    if labels is not None:
        lengths[LABELS_KEY] = len(labels)
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: arrays differ in length: {lengths}")
    n = next(iter(lengths.values()))
    if n < 2:
        raise ValueError(f"{where} has {n} sample(s); at least 2 are needed (half calibrate, half evaluate)")
    half = n // 2
    cal = SampleSet({k: v[:half] for k, v in data.items()}, None if labels is None else labels[:half],
                    f"{path.name}: samples 0-{half - 1} of {n}")
    ev = SampleSet({k: v[half:] for k, v in data.items()}, None if labels is None else labels[half:],
                   f"{path.name}: samples {half}-{n - 1} of {n}")
    return cal, ev, {"synthetic_data": False, "data_file": str(path)}


def synthetic_inputs(inputs: list[InputSpec], n: int, seed: int = SYNTHETIC_SEED) -> dict[str, np.ndarray]:
    """Seeded stand-in inputs: standard normal for floats, small non-negative integers for integer and bool inputs."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        shape = spec.batched(n)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[spec.name] = rng.integers(0, SYNTHETIC_INT_HIGH, shape).astype(dtype)
    return out


def synthetic_sample_sets(inputs: list[InputSpec]) -> tuple[SampleSet, SampleSet, dict[str, Any]]:
    """Synthetic calibration and evaluation sets (disjoint halves of one seeded draw)."""
    data = synthetic_inputs(inputs, SYNTHETIC_SAMPLES)
    half = SYNTHETIC_SAMPLES // 2
    what = f"synthetic inputs (seed {SYNTHETIC_SEED}; normal floats, integers in [0, {SYNTHETIC_INT_HIGH}))"
    cal = SampleSet({k: v[:half] for k, v in data.items()}, None, f"{what}, first half")
    ev = SampleSet({k: v[half:] for k, v in data.items()}, None, f"{what}, second half")
    return cal, ev, {"synthetic_data": True}
