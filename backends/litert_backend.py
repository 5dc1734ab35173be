"""LiteRT (TensorFlow Lite's runtime) running ``.tflite`` flatbuffers on the CPU, through the ``ai-edge-litert`` wheel.

No TensorFlow is needed: ``ai_edge_litert.interpreter.Interpreter`` is the LiteRT C++ interpreter
with its Python bindings. By default the XNNPACK delegate takes every op it supports (as on
Android); ``kernels = "builtin"`` runs LiteRT's own optimised kernels without any delegate and
``kernels = "reference"`` its reference kernels (slow; for checking numbers, not for speed).

A ``.tflite`` file fixes its input shapes (batch 1 for models converted from torch). The session
resizes the inputs to the case's batch (``resize_tensor_input`` + ``allocate_tensors``); a graph
that bakes its batch into a reshape refuses, and the error says so. Fully quantized models take
and give int8/uint8 tensors: the session quantizes float inputs with the model's own scale and zero
point and dequantizes its outputs, inside the timed region (the timing convention says so), so
every backend hands the harness the same float outputs.

``ai_edge_litert`` is imported inside functions: loading the backend registry stays cheap.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention,
                                     never_raises)
from costbench.core.artifacts import FORMAT_TFLITE, Artifact, InputSpec

INSTALL_HINT = "pip install 'costbench[litert]'"
FLATBUFFER_ID = b"TFL3"  # bytes 4-8 of every TensorFlow Lite / LiteRT model file
# Interpreter op resolvers by our option name (ai_edge_litert.interpreter.OpResolverType member names).
KERNELS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}
QUANTIZED_IO = (np.int8, np.uint8, np.int16)

QUANTIZING_BOUNDARY = ("host numpy float inputs -> quantized to the model's integer input type with its own scale "
                       "and zero point -> invoke -> integer outputs dequantized to float32 host numpy; quantize, "
                       "copies and dequantize are inside the timed region (no device copies on CPU)")


class LiteRTOptions(BackendOptions):
    """Options for the litert backend: the interpreter's threads (``threads``) and which kernels run the ops.

    ``threads = None`` means every core this process may use, as for the other CPU backends: LiteRT's
    own default (``num_threads=None``) is one thread for its kernels and XNNPACK alike.
    """

    kernels: Literal["xnnpack", "builtin", "reference"] = Field(
        "xnnpack", description="'xnnpack': the XNNPACK delegate takes the ops it supports (LiteRT's default on CPU); "
        "'builtin': LiteRT's optimised kernels, no delegate; 'reference': LiteRT's reference kernels, no delegate.")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def import_interpreter() -> Any:
    """``ai_edge_litert.interpreter``; an ImportError that says what to install when it is missing or broken."""
    try:
        from ai_edge_litert import interpreter
    except ModuleNotFoundError as exc:
        if exc.name in ("ai_edge_litert", "ai_edge_litert.interpreter"):
            raise ImportError(f"ai-edge-litert is not installed: {INSTALL_HINT}") from exc
        raise ImportError(f"ai-edge-litert {_version('ai-edge-litert')} failed to import ({exc}): "
                          "pip install --force-reinstall ai-edge-litert") from exc
    except Exception as exc:  # a broken native library surfaces as ImportError or OSError
        raise ImportError(f"ai-edge-litert {_version('ai-edge-litert')} failed to import ({type(exc).__name__}: "
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


class LiteRTSession(Session):
    """One interpreter, its inputs resized to the case's batch; feeds the artifact's inputs in the model's order."""

    def __init__(self, path: Path, artifact: Artifact, batch_size: int, opts: LiteRTOptions):
        self._path = Path(path)
        self._artifact = artifact
        self._batch_size = batch_size
        self._opts = opts
        self._threads = opts.threads or usable_cores()
        self._interpreter = open_interpreter(self._path, opts.kernels, self._threads)
        details = self._interpreter.get_input_details()
        self._names = _match_inputs(self._path, artifact.inputs, details)
        self._resized = _resize(self._interpreter, self._path, artifact.inputs, details, batch_size)
        self._inputs = [(d["index"], np.dtype(d["dtype"]), quant_params(d), spec.dtype)
                        for spec, d in zip(artifact.inputs, self._interpreter.get_input_details())]
        self._outputs = [(d["index"], quant_params(d)) for d in self._interpreter.get_output_details()]
        quantizing = any(q is not None and np.dtype(s).kind == "f" for _, _, q, s in self._inputs) or \
            any(q is not None for _, q in self._outputs)
        # Float models time exactly what every backend times; quantized I/O says where its conversions happen.
        self.timing = TimingConvention(boundary=QUANTIZING_BOUNDARY) if quantizing else TimingConvention()

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Set every input (quantized when the model's is integer and the artifact's float), invoke, read outputs."""
        interpreter = self._interpreter
        for (index, dtype, qp, spec_dtype), name in zip(self._inputs, self._names):
            try:
                x = inputs[name]
            except KeyError:
                raise KeyError(f"missing input {name!r}; the model takes {self._names}") from None
            if qp is not None and x.dtype.kind == "f":
                x = quantize(x, dtype, *qp)
            elif x.dtype != dtype:
                x = x.astype(dtype)
            interpreter.set_tensor(index, np.ascontiguousarray(x))
        interpreter.invoke()
        # get_tensor copies: the next invoke cannot change what the caller holds.
        return [interpreter.get_tensor(index) if qp is None else dequantize(interpreter.get_tensor(index), *qp)
                for index, qp in self._outputs]

    def fork(self) -> "LiteRTSession":
        """A new interpreter on the same file: an Interpreter runs one invoke at a time."""
        return LiteRTSession(self._path, self._artifact, self._batch_size, self._opts)

    def close(self) -> None:
        """Drop the interpreter so its arena can be freed."""
        self._interpreter = None

    def info(self) -> dict[str, Any]:
        """Runtime version, kernels and how many XNNPACK partitions, threads, batch, resized or not, quantized I/O."""
        ops = [d.get("op_name") for d in self._interpreter._get_ops_details()] if self._interpreter else []
        return {
            "runtime": "LiteRT interpreter (ai_edge_litert.interpreter)",
            "ai_edge_litert": _version("ai-edge-litert"),
            "device": "cpu",
            "kernels": self._opts.kernels,
            "delegate": "XNNPACK" if "DELEGATE" in ops else "none",
            # The op list keeps the nodes a delegate replaced, so only the delegate's own nodes can be counted.
            "delegated_partitions": ops.count("DELEGATE"),
            "threads": self._threads,
            "batch_size": self._batch_size,
            "resized_inputs": self._resized,
            "quantized_inputs": {n: {"dtype": dt.name, "scale": q[0], "zero_point": q[1]}
                                 for n, (_, dt, q, _) in zip(self._names, self._inputs) if q is not None},
            "quantized_outputs": sum(q is not None for _, q in self._outputs),
        }


def _match_inputs(path: Path, specs: list[InputSpec], details: list[dict[str, Any]]) -> list[str]:
    """Artifact input names in the model's input order: by name when the file's names are the artifact's, else by position."""
    if len(specs) != len(details):
        raise ValueError(f"{path}: the model takes {len(details)} inputs {[d['name'] for d in details]}, the artifact "
                         f"declares {len(specs)} {[s.name for s in specs]}")
    by_name = {s.name: s for s in specs}
    if all(d["name"] in by_name for d in details):
        specs[:] = [by_name[d["name"]] for d in details]
    return [s.name for s in specs]


def _resize(interpreter: Any, path: Path, specs: list[InputSpec], details: list[dict[str, Any]],
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


class LiteRTBackend(Backend):
    """LiteRT on the CPU: XNNPACK delegate by default, or LiteRT's builtin/reference kernels; fp32, fp16 and int8 models."""

    name = "litert"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "fp16", "int8"), formats=(FORMAT_TFLITE,))
    Options = LiteRTOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when ``ai_edge_litert.interpreter`` imports and has the Interpreter and its op resolvers."""
        lib = import_interpreter()
        missing = [name for name in ("Interpreter", "OpResolverType") if not hasattr(lib, name)]
        missing += [f"OpResolverType.{r}" for r in KERNELS.values()
                    if hasattr(lib, "OpResolverType") and not hasattr(lib.OpResolverType, r)]
        if missing:
            return Availability.missing(f"ai-edge-litert {_version('ai-edge-litert')} lacks {', '.join(missing)}; "
                                        f"costbench needs the version its extra pins: {INSTALL_HINT}")
        return Availability.ok(ai_edge_litert=_version("ai-edge-litert"))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load the flatbuffer, resize its inputs to ``batch_size`` and allocate; clear errors naming the file."""
        self.check_request(artifact, batch_size, device)
        opts: LiteRTOptions = self.own_options(options)
        return LiteRTSession(artifact.path, Artifact(**{**artifact.__dict__, "inputs": list(artifact.inputs)}),
                             batch_size, opts)
