"""torch -> ExecuTorch ``.pte`` lowered to XNNPACK, with a dynamic batch axis, checked on the ExecuTorch runtime.

Shared by the ``fp32`` recipe (its ``executorch-pte`` format) and ``int8-xnnpack``. The flow is
the one ExecuTorch documents for XNNPACK: ``torch.export.export`` -> ``to_edge_transform_and_lower``
with ``XnnpackPartitioner`` -> ``to_executorch()`` -> ``.buffer`` written as ``model.pte``.

The batch axis is exported as ``torch.export.Dim("batch", max=MAX_BATCH)``, so one artifact serves
every batch size up to ``MAX_BATCH`` (the Recipe contract does not pass the batch size; an
artifact per batch size would need it). A model whose batch axis cannot be made dynamic falls back
to a static batch of 1, the edge case that matters, and says so in its provenance; the backend
then refuses other batch sizes with that reason.

Every heavy import (torch, executorch, torchao) happens inside functions: the recipes that use
this module are imported at planning time.
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from costbench.core.artifacts import InputSpec
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.zoo.base import SampleSet

# Part of every ExecuTorch artifact's cache key: bump when the export below changes its bytes.
EXPORT_VERSION = 1
# Upper bound of the dynamic batch axis. ExecuTorch plans the memory of outputs and of tensors
# between delegate calls at this size (XNNPACK sizes its own buffers at run time; inputs are not
# planned, see lower_to_pte); larger batches are refused by the backend with this reason.
MAX_BATCH = 64
EXPORT_BATCH = 2  # trace at 2, not 1: torch.export specialises a size-1 dimension to a constant
CHECK_BATCHES = (1, 3)  # then run at two other sizes on the runtime: the batch axis really is dynamic
# Relative to the output's magnitude, as for the ONNX export: |pte - torch| <= TOLERANCE * max(1, max|torch|).
TOLERANCE = 1e-4
XNNPACK_DELEGATE = "XnnpackBackend"
INSTALL_HINT = "pip install 'costbench[edge]'"


class ExecuTorchExportError(RuntimeError):
    """torch.export or the XNNPACK lowering failed, or the .pte does not reproduce the torch model."""


def import_runtime() -> Any:
    """The ExecuTorch runtime's C++ extension (``executorch.extension.pybindings._C``).

    ``portable_lib`` (which ``executorch.runtime`` wraps) re-exports exactly this module after
    importing torch, whose shared libraries it links against, and a warnings helper that pulls in
    all of ``executorch.exir`` (several seconds per process). Importing torch and then the
    extension directly gives the same runtime without that cost.
    """
    import torch  # noqa: F401  (loads libtorch, which the extension links against)

    try:
        from executorch.extension.pybindings import _C
    except ModuleNotFoundError as exc:
        if exc.name in ("executorch", "executorch.extension", "executorch.extension.pybindings"):
            raise ImportError(f"executorch is not installed: {INSTALL_HINT}") from exc
        raise
    return _C


def load_method(runtime: Any, path: Path, method: str = "forward") -> Any:
    """Load ``path`` with full verification (as ``executorch.runtime.Runtime`` does) and its ``method``."""
    program = runtime._load_program(str(path), enable_etdump=False, debug_buffer_size=0,
                                    program_verification=runtime.Verification.InternalConsistency)
    if method not in {program.get_method_name(i) for i in range(program.num_methods())}:
        raise ExecuTorchExportError(f"{path}: the program has no {method!r} method")
    # The program must outlive the method: keep it referenced from the caller's side too.
    return program, program.load_method(method)


def example_args(inputs: Sequence[InputSpec], samples: SampleSet, batch: int) -> tuple:
    """Real samples as the tuple of tensors a module is called with, in the bundle's input order."""
    import torch

    feed = samples.batch(batch)
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[i.name].astype(i.dtype, copy=False))) for i in inputs)


def export_program(module: Any, inputs: Sequence[InputSpec], samples: SampleSet, name: str,
                   max_batch: int = MAX_BATCH, dynamic: bool = True) -> tuple[Any, dict[str, Any]]:
    """``torch.export`` with a dynamic batch axis, else a static batch of 1; (ExportedProgram, batch provenance).

    ``dynamic=False`` goes straight to the static batch of 1. Raises :class:`ExecuTorchExportError`
    with torch.export's reason when neither exports.
    """
    import torch

    dynamic_error = "not tried (dynamic=False)"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # export warns about pytree/deprecations on every call
        if dynamic:
            batch = torch.export.Dim("batch", min=1, max=max_batch)
            shapes = tuple({0: batch} for _ in inputs)
            try:
                args = example_args(inputs, samples, EXPORT_BATCH)
                program = torch.export.export(module, args, dynamic_shapes=shapes)
                return program, {"batch": "dynamic", "min_batch": 1, "max_batch": max_batch}
            except Exception as exc:  # torch.export raises many types (UserError, GuardOnDataDependent...)
                dynamic_error = f"{type(exc).__name__}: {_first_lines(exc)}"
        try:
            program = torch.export.export(module, example_args(inputs, samples, 1))
        except Exception as exc:
            raise ExecuTorchExportError(
                f"torch.export could not export {name!r} for ExecuTorch: {type(exc).__name__}: {_first_lines(exc)}"
            ) from exc
    return program, {"batch": "static", "min_batch": 1, "max_batch": 1,
                     "dynamic_batch_error": dynamic_error}


def _first_lines(exc: BaseException, n: int = 6) -> str:
    """The head of an exporter's message (torch.export's run to pages of graph dumps)."""
    lines = str(exc).strip().splitlines()
    return "\n".join(lines[:n]) + (" [...]" if len(lines) > n else "")


def _declared_bound_pass(program: Any) -> Any:
    """A sym-shape pass that plans memory at the batch bounds declared to torch.export.

    ExecuTorch's default pass reads upper bounds from the shape environment, and with torch 2.13
    the XNNPACK lowering narrows that environment: torch's fake convolution asks whether the batch
    is >= 16 (to pick a conv backend) and records ``batch < 16`` as a guard, so the .pte came out
    planned for at most 15 samples. The delegate itself is not batch-specialised (checked at
    batch sizes above 15 in the tests), so the declared range is the right memory bound.
    """
    import torch
    from executorch.exir.tensor import TensorSpec
    from torch.fx import GraphModule
    from torch.fx.passes.infra.pass_base import PassBase, PassResult
    from torch.utils import _pytree as pytree
    from torch.utils._sympy.value_ranges import bound_sympy

    declared = dict(program.range_constraints)

    def upper(value: Any) -> int:
        if not isinstance(value, torch.SymInt):
            return int(value)
        node = value.node
        bound = bound_sympy(node.expr, {**node.shape_env.var_to_range, **declared}).upper
        try:
            return int(bound)
        except TypeError:
            raise ExecuTorchExportError(f"cannot bound dynamic size {node.expr} for memory planning") from None

    class DeclaredBoundSymShapeEvalPass(PassBase):
        """ExecuTorch's ConstraintBasedSymShapeEvalPass, reading the declared ranges first."""

        def call(self, graph_module: GraphModule) -> PassResult:
            for sub in graph_module.modules():
                if not isinstance(sub, GraphModule):
                    continue
                for node in sub.graph.nodes:
                    for spec in pytree.tree_flatten(node.meta.get("spec", []))[0]:
                        if isinstance(spec, TensorSpec):
                            spec.shape = [upper(s) for s in spec.shape]
                            spec.stride = [upper(s) for s in spec.stride]
            return PassResult(graph_module, True)

    return DeclaredBoundSymShapeEvalPass()


def lower_to_pte(program: Any, path: Path, name: str) -> dict[str, Any]:
    """Lower an ExportedProgram to XNNPACK and write the .pte; returns what was delegated and what was not."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    # Inputs are not memory-planned: the runtime reads the caller's tensors in place. A planned
    # input would be an arena of MAX_BATCH samples, allocated and zeroed at load whatever the batch
    # (+37 MB of resident memory for EfficientNet-Lite0), and one more copy per call.
    config = ExecutorchBackendConfig(sym_shape_eval_pass=_declared_bound_pass(program),
                                     memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            et_program = edge.to_executorch(config)
    except Exception as exc:
        raise ExecuTorchExportError(
            f"ExecuTorch could not lower {name!r} to XNNPACK: {type(exc).__name__}: {_first_lines(exc)}"
        ) from exc
    path.write_bytes(et_program.buffer)
    return op_summary(et_program.exported_program().graph_module)


def op_summary(graph_module: Any) -> dict[str, Any]:
    """How much of the program XNNPACK runs: delegate calls, and the ops left to ExecuTorch's portable kernels."""
    delegates = 0
    portable: collections.Counter[str] = collections.Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        target = _op_name(node.target)
        if "call_delegate" in target:
            delegates += 1
        # memory.alloc is the planner's buffer for an out-variant op, not an op.
        elif target not in ("getitem", "_operator.getitem", "executorch.exir.memory.alloc") \
                and "sym_size" not in target:
            portable[target] += 1
    return {"xnnpack_delegate_calls": delegates, "portable_ops": dict(sorted(portable.items()))}


def _op_name(target: Any) -> str:
    """``aten.view_copy.default`` for operator overloads, ``module.function`` for Python callables."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if hasattr(target, "_schema") and hasattr(target, "__name__"):  # ExecuTorch's EdgeOpOverload
        return target.__name__
    if callable(target) and hasattr(target, "__qualname__"):
        module = getattr(target, "__module__", None)
        return f"{module}.{target.__qualname__}" if module else target.__qualname__
    return str(target)


def run_pte(method: Any, args: tuple) -> list[np.ndarray]:
    """One call of a loaded method on torch tensors; outputs copied out as numpy."""
    return [t.numpy() for t in method.call(list(args), clone_outputs=True)]


def verify_pte(module: Any, inputs: Sequence[InputSpec], samples: SampleSet, path: Path, batch_info: dict[str, Any],
               tolerance: float | None = TOLERANCE) -> dict[str, Any]:
    """Run the .pte on the ExecuTorch runtime at batch sizes the export never saw and compare with ``module``.

    Returns the largest absolute difference and the worst cosine similarity seen. With a
    ``tolerance``, a difference beyond ``tolerance * max(1, max|torch|)`` (or NaN) raises
    :class:`ExecuTorchExportError`; int8 programs pass None (their difference is accuracy, measured later).
    """
    import torch

    runtime = import_runtime()
    _program, method = load_method(runtime, path)
    batches = [b for b in CHECK_BATCHES if b <= batch_info["max_batch"]] or [batch_info["max_batch"]]
    worst, worst_cos = 0.0, 1.0
    for batch in batches:
        args = example_args(inputs, samples, batch)
        with torch.no_grad():
            ref = module(*args)
        # Flattened as torch.export flattens outputs (tuples, lists, dicts, transformers' ModelOutput).
        refs = [t.numpy() for t in torch.utils._pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
        got = run_pte(method, args)
        if len(got) != len(refs):
            raise ExecuTorchExportError(f"{path}: {len(got)} outputs on the runtime, {len(refs)} in torch")
        for i, (r, g) in enumerate(zip(refs, got)):
            if r.shape != g.shape:
                raise ExecuTorchExportError(f"{path}: output {i} has shape {g.shape} on ExecuTorch, {r.shape} in torch "
                                            f"(batch {batch})")
            if not r.size:
                continue
            diff = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64))))
            rf, gf = r.reshape(len(r), -1).astype(np.float64), g.reshape(len(g), -1).astype(np.float64)
            denom = np.linalg.norm(rf, axis=1) * np.linalg.norm(gf, axis=1)
            cos = float(np.min(np.where(denom > 0, (rf * gf).sum(1) / np.where(denom > 0, denom, 1), 1.0)))
            if tolerance is not None:
                bound = tolerance * max(1.0, float(np.max(np.abs(r))))
                if not diff <= bound:  # also catches NaN
                    raise ExecuTorchExportError(f"{path}: output {i} differs from torch by {diff:.3g} at batch {batch} "
                                                f"(tolerance {bound:.3g})")
            worst, worst_cos = max(worst, diff), min(worst_cos, cos)
    return {"export_max_abs_error": worst, "export_min_cosine": worst_cos, "checked_batches": batches}


def export_pte(module: Any, inputs: Sequence[InputSpec], samples: SampleSet, path: Path, name: str,
               prepare: Callable[[Any, dict[str, Any]], tuple[Any, Any, dict[str, Any]]] | None = None,
               tolerance: float | None = TOLERANCE) -> dict[str, Any]:
    """Export ``module`` to ``path`` (.pte, XNNPACK) and verify it on the runtime; returns provenance.

    ``prepare(exported_program, batch_info)`` may transform the model before lowering (int8
    quantization) and returns (program to lower, module to verify against, extra provenance).
    """
    import torch

    program, batch_info = export_program(module, inputs, samples, name)
    reference, extra = module, {}
    if prepare is not None:
        program, reference, extra = prepare(program, batch_info)
    lowered = lower_to_pte(program, path, name)
    checked = verify_pte(reference, inputs, samples, path, batch_info, tolerance)
    return {
        "exporter": "torch.export.export -> executorch.exir.to_edge_transform_and_lower(XnnpackPartitioner) "
                    "-> to_executorch()",
        "delegate": XNNPACK_DELEGATE,
        **batch_info,
        **extra,
        **lowered,
        **checked,
        "executorch": library_version("executorch"),
        "torchao": library_version("torchao"),
        "torch": torch.__version__,
        "export_version": EXPORT_VERSION,
    }
