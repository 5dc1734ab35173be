""".tflite files on the LiteRT interpreter (ai-edge-litert): check and open one, read its inputs and outputs, run it.

Shared by the litert backend, whose session is a :class:`TFLiteRunner` with a timing convention, and by
the LiteRT recipes and the zoo, which read a file's inputs, list its ops and check a conversion on the
code the measurement runs. Imports nothing of ours; ``ai_edge_litert`` is imported inside functions, so
importing this module stays cheap.

A ``.tflite`` file fixes its input shapes (batch 1 for models converted from torch). The runner resizes
the inputs to the batch asked for (``resize_tensor_input`` + ``allocate_tensors``); a graph that bakes its
batch into a reshape refuses, and the error says so. Fully quantized models take and give int8/uint8
tensors: the runner quantizes float inputs with the model's own scale and zero point and dequantizes its
outputs, so every caller gets float outputs.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

INSTALL_HINT = "pip install 'costbench[litert]'"
FLATBUFFER_ID = b"TFL3"  # bytes 4-8 of every TensorFlow Lite / LiteRT model file
# Interpreter op resolvers by the litert backend's option name (ai_edge_litert.interpreter.OpResolverType members).
KERNELS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}
QUANTIZED_IO = (np.int8, np.uint8, np.int16)


def litert_version() -> str:
    """The installed ai-edge-litert version, without importing it ("not installed" when absent)."""
    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "not installed"


def import_interpreter() -> Any:
    """``ai_edge_litert.interpreter``; an ImportError that says what to install when it is missing or broken."""
    try:
        from ai_edge_litert import interpreter
    except ModuleNotFoundError as exc:
        if exc.name in ("ai_edge_litert", "ai_edge_litert.interpreter"):
            raise ImportError(f"ai-edge-litert is not installed: {INSTALL_HINT}") from exc
        raise ImportError(f"ai-edge-litert {litert_version()} failed to import ({exc}): "
                          "pip install --force-reinstall ai-edge-litert") from exc
    except Exception as exc:  # a broken native library surfaces as ImportError or OSError
        raise ImportError(f"ai-edge-litert {litert_version()} failed to import ({type(exc).__name__}: "
                          f"{exc}): pip install --force-reinstall ai-edge-litert") from exc
    return interpreter


def check_flatbuffer(path: Path) -> None:
    """A clear ValueError when ``path`` is missing, empty or not a LiteRT flatbuffer (before LiteRT reads it)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such .tflite file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != FLATBUFFER_ID:
        raise ValueError(f"{path}: not a LiteRT/TensorFlow Lite model (a .tflite flatbuffer has the identifier "
                         f"'TFL3' at byte 4; this file has {head[4:8]!r}, {path.stat().st_size} bytes)")


def open_interpreter(path: Path, kernels: str = "xnnpack", threads: int | None = None) -> Any:
    """An Interpreter on ``path``; ValueError naming the file and LiteRT's reason when it cannot load it.

    A truncated or corrupt file and an op the runtime lacks ("Didn't find op for builtin opcode",
    "Encountered unresolved custom op") fail here or at the first ``allocate_tensors``.
    """
    lib = import_interpreter()
    check_flatbuffer(path)
    resolver = getattr(lib.OpResolverType, KERNELS[kernels])
    try:
        return lib.Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
    except Exception as exc:  # ValueError/RuntimeError from the C++ side: the message is LiteRT's
        raise ValueError(f"{path}: LiteRT cannot load the model: {_first_line(exc)}") from None


def allocate(interpreter: Any, path: Path, what: str = "") -> None:
    """``allocate_tensors``; ValueError naming the file (and ``what`` was asked) with LiteRT's reason."""
    try:
        interpreter.allocate_tensors()
    except Exception as exc:
        raise ValueError(f"{path}: LiteRT cannot prepare the model{what}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), the thread count when none is asked for."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def quant_params(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantized integer tensor, or None for a float/plain integer one."""
    if np.dtype(detail["dtype"]).type not in QUANTIZED_IO:
        return None
    scale, zero_point = detail["quantization"]
    return (float(scale), int(zero_point)) if scale else None


def quantize(x: np.ndarray, dtype: Any, scale: float, zero_point: int) -> np.ndarray:
    """``q = clip(round(x / scale) + zero_point, q_min, q_max)`` in the model's integer type."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``x = scale * (q - zero_point)`` as float32."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def read_inputs(path: Path) -> list[dict[str, Any]]:
    """The model's inputs as written in the file: name, shape signature (-1: dynamic), dtype, quantization.

    Uses LiteRT's builtin kernels without a delegate and allocates nothing, so it works on any model
    LiteRT can parse.
    """
    interpreter = open_interpreter(path, kernels="builtin")
    return [{"name": d["name"], "shape_signature": [int(s) for s in d.get("shape_signature", d["shape"])],
             "dtype": np.dtype(d["dtype"]).name, "quantization": quant_params(d)}
            for d in interpreter.get_input_details()]


def read_outputs(path: Path) -> list[dict[str, Any]]:
    """The model's outputs as written in the file: name, shape signature, dtype, quantization."""
    interpreter = open_interpreter(path, kernels="builtin")
    return [{"name": d["name"], "shape_signature": [int(s) for s in d.get("shape_signature", d["shape"])],
             "dtype": np.dtype(d["dtype"]).name, "quantization": quant_params(d)}
            for d in interpreter.get_output_details()]


class TFLiteRunner:
    """One interpreter on a .tflite, its inputs resized to ``batch_size``; runs named inputs in the model's order.

    ``inputs`` are the input specs the caller feeds (anything with ``name``, ``shape`` (per sample) and
    ``dtype``, such as :class:`costbench.core.artifacts.InputSpec`). They are matched to the model's
    inputs by name when the file's names are theirs, else by position. ``threads = None``: every core
    this process may use (LiteRT's own default is one thread).
    """

    def __init__(self, path: Path, inputs: Sequence[Any], batch_size: int, kernels: str = "xnnpack",
                 threads: int | None = None):
        self.path = Path(path)
        self.batch_size = batch_size
        self.threads = threads or usable_cores()
        self.interpreter = open_interpreter(self.path, kernels, self.threads)
        details = self.interpreter.get_input_details()
        self.specs = _in_model_order(self.path, inputs, details)
        self.names = [s.name for s in self.specs]
        self.resized = _resize(self.interpreter, self.path, self.specs, details, batch_size)
        # Per input (tensor index, the model's dtype, (scale, zero point) or None); per output (index, quantization).
        self.inputs = [(d["index"], np.dtype(d["dtype"]), quant_params(d))
                       for d in self.interpreter.get_input_details()]
        self.outputs = [(d["index"], quant_params(d)) for d in self.interpreter.get_output_details()]

    @property
    def quantizing(self) -> bool:
        """Whether ``run`` quantizes a float input or dequantizes an output."""
        return any(q is not None and np.dtype(s.dtype).kind == "f" for (_, _, q), s in zip(self.inputs, self.specs)) \
            or any(q is not None for _, q in self.outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Set every input (quantized when the model's is integer and the input float), invoke, read outputs."""
        interpreter = self.interpreter
        for (index, dtype, qp), name in zip(self.inputs, self.names):
            try:
                x = inputs[name]
            except KeyError:
                raise KeyError(f"missing input {name!r}; the model takes {self.names}") from None
            if qp is not None and x.dtype.kind == "f":
                x = quantize(x, dtype, *qp)
            elif x.dtype != dtype:
                x = x.astype(dtype)
            interpreter.set_tensor(index, np.ascontiguousarray(x))
        interpreter.invoke()
        # get_tensor copies: the next invoke cannot change what the caller holds.
        return [interpreter.get_tensor(index) if qp is None else dequantize(interpreter.get_tensor(index), *qp)
                for index, qp in self.outputs]

    def ops(self) -> list[str]:
        """The op names of the model as the interpreter runs it (a delegate's partitions are ``DELEGATE``)."""
        return [d.get("op_name") for d in self.interpreter._get_ops_details()] if self.interpreter else []

    def close(self) -> None:
        """Drop the interpreter so its arena can be freed."""
        self.interpreter = None


def _in_model_order(path: Path, specs: Sequence[Any], details: list[dict[str, Any]]) -> list[Any]:
    """``specs`` in the model's input order: by name when the file's names are theirs, else as given (by position)."""
    if len(specs) != len(details):
        raise ValueError(f"{path}: the model takes {len(details)} inputs {[d['name'] for d in details]}, the artifact "
                         f"declares {len(specs)} {[s.name for s in specs]}")
    by_name = {s.name: s for s in specs}
    if all(d["name"] in by_name for d in details):
        return [by_name[d["name"]] for d in details]
    return list(specs)


def _resize(interpreter: Any, path: Path, specs: Sequence[Any], details: list[dict[str, Any]],
            batch_size: int) -> bool:
    """Give every input the shape (batch, *per-sample shape) and allocate; whether any input was resized."""
    resized = False
    for spec, d in zip(specs, details):
        shape = [int(s) for s in d["shape"]]
        signature = [int(s) for s in d.get("shape_signature", d["shape"])]
        want = [batch_size, *spec.shape]
        if len(signature) != len(want):
            raise ValueError(f"{path}: input {d['name']!r} has rank {len(signature)} (shape {signature}); the "
                             f"artifact declares per-sample shape {tuple(spec.shape)}, rank {len(want)} with the batch")
        fixed = [(i, s) for i, s in enumerate(signature[1:], 1) if s != -1 and s != want[i]]
        if fixed:
            raise ValueError(f"{path}: input {d['name']!r} has shape {signature} in the model; the artifact declares "
                             f"per-sample shape {tuple(spec.shape)}")
        if shape != want:
            interpreter.resize_tensor_input(d["index"], want, strict=False)
            resized = True
    if not resized:
        allocate(interpreter, path)
        return False
    batches = {int(d.get("shape_signature", d["shape"])[0]) for d in details}
    static = sorted(b for b in batches if b != -1)
    what = (f" at batch {batch_size} (its inputs have a static batch of {static[0]}: build the variant with "
            f"batch_size = {batch_size}, or run batch_sizes = [{static[0]}])" if static else f" at batch {batch_size}")
    allocate(interpreter, path, what)
    return True
