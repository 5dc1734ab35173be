"""ExecuTorch, the edge runtime that replaced PyTorch Mobile, running .pte programs delegated to XNNPACK.

The program runs on ExecuTorch's C++ runtime through its Python bindings, on the CPU. torch and
executorch are imported inside the methods so that loading the registry stays cheap; the
bindings' extension module is imported directly (see :func:`_import_runtime`).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, input_plan,
                                     never_raises, ordered_inputs)
from costbench.core.artifacts import FORMAT_EXECUTORCH, Artifact

INSTALL_HINT = "pip install 'costbench[edge]'"
XNNPACK = "XnnpackBackend"
# ExecuTorch's ScalarType codes (TensorInfo.dtype()) for the dtypes a model input may have.
_SCALAR_TYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32,
                 7: np.float64, 11: np.bool_}


class ExecuTorchOptions(BackendOptions):
    """Options for the executorch backend; ``threads`` sizes the runtime's threadpool (XNNPACK's workers)."""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _import_runtime() -> Any:
    """The runtime's C++ extension, ``executorch.extension.pybindings._C``; ImportError says what to do.

    ``executorch.runtime`` and ``portable_lib`` re-export exactly this module, after importing
    torch (whose libraries it links against) and a warnings helper that imports all of
    ``executorch.exir`` (several seconds, which would count as load time in every case).
    """
    try:
        import torch  # noqa: F401  (the extension links against libtorch)
    except ImportError as exc:
        raise ImportError(f"executorch needs torch, which failed to import ({type(exc).__name__}: {exc})") from exc
    try:
        from executorch.extension.pybindings import _C
    except ModuleNotFoundError as exc:
        if exc.name in ("executorch", "executorch.extension", "executorch.extension.pybindings"):
            raise ImportError(f"executorch is not installed: {INSTALL_HINT}") from exc
        raise ImportError(
            f"executorch {_version('executorch')} has no runtime bindings ({exc}): pip install --force-reinstall "
            "executorch (the wheel ships executorch/extension/pybindings/_C)"
        ) from exc
    except ImportError as exc:  # typically undefined symbols: built against another torch
        raise ImportError(
            f"executorch {_version('executorch')}'s runtime failed to load with torch {_version('torch')} ({exc}); "
            f"it needs the torch it was built for: {INSTALL_HINT}"
        ) from exc
    return _C


class ExecuTorchSession(Session):
    """A loaded ``forward`` method fed torch views of the host numpy inputs (no copy: inputs are not memory-planned)."""

    def __init__(self, runtime: Any, program: Any, method: Any, artifact: Artifact, batch_size: int, max_batch: int):
        import torch

        self._torch = torch
        self._runtime = runtime
        self._program = program  # the method refers to the program's memory: keep it alive
        self._method = method
        self._plan = input_plan(artifact.inputs)
        self._batch_size = batch_size
        self._max_batch = max_batch

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run ``forward`` on ``inputs`` (keyed by artifact input name); outputs as numpy, in model order."""
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in ordered_inputs(inputs, self._plan)]
        # clone_outputs: output buffers are the program's planned memory, overwritten by the next call.
        return [t.numpy() for t in self._method.call(args, clone_outputs=True)]

    def close(self) -> None:
        """Drop the method and program so their memory can be freed."""
        self._method = None
        self._program = None

    def info(self) -> dict[str, Any]:
        """Runtime version, threadpool size in effect, delegate and the program's batch bound."""
        return {
            "runtime": "executorch (C++ runtime, Python bindings)",
            "executorch": _version("executorch"),
            "delegate": XNNPACK,
            "device": "cpu",
            "threads": self._runtime._threadpool_get_thread_count(),
            "batch_size": self._batch_size,
            "program_max_batch": self._max_batch,
        }


class ExecuTorchBackend(Backend):
    """ExecuTorch on the CPU with the XNNPACK delegate (fp32 and int8 .pte programs)."""

    name = "executorch"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "int8"), formats=(FORMAT_EXECUTORCH,))
    Options = ExecuTorchOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when the runtime bindings load and have the XNNPACK delegate registered."""
        runtime = _import_runtime()
        registered = list(runtime._get_registered_backend_names())
        if not runtime._is_available(XNNPACK):
            return Availability.missing(
                f"executorch {_version('executorch')}'s runtime has no {XNNPACK} delegate registered "
                f"(registered: {', '.join(registered) or 'none'}); the PyPI wheel ships it: {INSTALL_HINT}"
            )
        return Availability.ok(executorch=_version("executorch"), torch=_version("torch"),
                               delegates=",".join(registered))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load the program, check it takes this batch size, size the threadpool, load ``forward``."""
        self.check_request(artifact, batch_size, device)
        opts: ExecuTorchOptions = self.own_options(options)
        runtime = _import_runtime()

        # Every case runs in its own child process, so resetting the process-wide threadpool affects only
        # this case. It is "unsafe" only while a method runs; nothing runs yet.
        if opts.threads is not None and opts.threads != runtime._threadpool_get_thread_count():
            runtime._unsafe_reset_threadpool(opts.threads)

        program = runtime._load_program(str(artifact.path), enable_etdump=False, debug_buffer_size=0,
                                        program_verification=runtime.Verification.InternalConsistency)
        methods = [program.get_method_name(i) for i in range(program.num_methods())]
        if "forward" not in methods:
            raise ValueError(f"{artifact.path}: the program has no 'forward' method (it has {methods})")
        meta = program.method_meta("forward")
        if meta.num_inputs() != len(artifact.inputs):
            raise ValueError(f"{artifact.path}: 'forward' takes {meta.num_inputs()} inputs, the artifact declares "
                             f"{len(artifact.inputs)} {[s.name for s in artifact.inputs]}")
        max_batch = _check_inputs(meta, artifact, batch_size)
        method = program.load_method("forward")
        return ExecuTorchSession(runtime, program, method, artifact, batch_size, max_batch)


def _check_inputs(meta: Any, artifact: Artifact, batch_size: int) -> int:
    """The program's batch bound (the planned size of dim 0); a clear error when this case cannot fit it."""
    bounds = []
    for i, spec in enumerate(artifact.inputs):
        info = meta.input_tensor_meta(i)
        sizes = tuple(info.sizes())
        if sizes[1:] != tuple(spec.shape):
            raise ValueError(f"{artifact.path}: input {spec.name!r} has per-sample shape {sizes[1:]} in the program, "
                             f"{tuple(spec.shape)} in the artifact")
        dtype = _SCALAR_TYPES.get(int(info.dtype()))
        if dtype is not None and np.dtype(dtype) != np.dtype(spec.dtype):
            raise ValueError(f"{artifact.path}: input {spec.name!r} is {np.dtype(dtype)} in the program, "
                             f"{spec.dtype} in the artifact")
        bounds.append(sizes[0])
    max_batch = min(bounds) if bounds else batch_size
    if batch_size > max_batch:
        how = artifact.provenance.get("batch")
        why = artifact.provenance.get("dynamic_batch_error")
        raise ValueError(
            f"{artifact.path}: the program takes batches of at most {max_batch} ({how or 'see provenance'} batch"
            + (f"; a dynamic batch did not export: {why}" if why else "")
            + f"), this case runs batch {batch_size}"
        )
    return max_batch
