"""The CUDA C launchers are released however their users end: PyCUDA aborts the process at exit (SIGABRT,
exit 134) when a context it pushed is still on its stack, so every engine or launcher we construct is
closed by a ``with`` block or an ExitStack, and ``close()`` is idempotent. The pop itself needs a GPU
(scripts/gpu_check.py runs the PyCUDA launcher and exits 0 only when the process ends cleanly)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from costbench.kernels.gpu import cuda_gemm
from costbench.kernels.gpu.cuda_gemm import CudaInt8Gemm, Launcher

ROOT = Path(__file__).resolve().parents[2]
# What pushes a context or owns a launcher when constructed.
OWNERS = {"CudaInt8Gemm", "PyCudaLauncher", "CupyLauncher", "make_launcher"}
SEARCHED = ("kernels", "backends", "harness", "costbench", "scripts", "benchmarks", "tests")


def _called_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _released(call: ast.Call, parents: dict[ast.AST, ast.AST]) -> bool:
    """The construction is closed by its owner: a ``with`` item, ``stack.enter_context(...)``, the value a
    factory returns (make_launcher, itself checked at its call sites), or CudaInt8Gemm's own launcher."""
    node, parent = call, parents.get(call)
    if isinstance(parent, ast.IfExp):  # `X(...) if cond else None`
        node, parent = parent, parents.get(parent)
    if isinstance(parent, ast.withitem) and parent.context_expr is node:
        return True
    if isinstance(parent, ast.Call) and _called_name(parent) == "enter_context" and node in parent.args:
        return True
    func = next((p for p in _ancestors(call, parents) if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if isinstance(parent, ast.Return) and func is not None and func.name == "make_launcher":
        return True
    if (isinstance(parent, ast.Assign) and func is not None and func.name == "__init__"
            and any(isinstance(t, ast.Attribute) and t.attr == "launcher" for t in parent.targets)):
        return True  # CudaInt8Gemm.launcher: closed by CudaInt8Gemm.close (checked below)
    return False


def _ancestors(node: ast.AST, parents: dict[ast.AST, ast.AST]):
    while node in parents:
        node = parents[node]
        yield node


def _construction_sites():
    for folder in SEARCHED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            parents = _parents(tree)
            for call in ast.walk(tree):
                if isinstance(call, ast.Call) and _called_name(call) in OWNERS:
                    yield path.relative_to(ROOT), call, parents


def test_every_engine_and_launcher_is_closed_by_a_with_block_or_an_exit_stack():
    sites = list(_construction_sites())
    # the known users are all found: the CLI's engines, the GPU check's validation and benchmark
    found = {str(p) for p, _, _ in sites}
    assert {"costbench/commands/kernels_gpu.py", "scripts/gpu_check.py", "kernels/gpu/cuda_gemm.py"} <= found
    leaks = [f"{p}:{c.lineno}: {_called_name(c)}(...)" for p, c, parents in sites
             if not _released(c, parents) and not p.parts[0] == "tests"]
    assert leaks == [], "construct these in a `with` block or enter them on an ExitStack:\n" + "\n".join(leaks)


def test_cuda_c_engines_takes_the_callers_exit_stack():
    tree = ast.parse((ROOT / "costbench/commands/kernels_gpu.py").read_text())
    calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and _called_name(c) == "cuda_c_engines"]
    assert len(calls) == 2  # validate and bench
    parents = _parents(tree)
    for call in calls:
        withs = [p for p in _ancestors(call, parents) if isinstance(p, ast.With)]
        assert withs and any(isinstance(i.context_expr, ast.Call) and _called_name(i.context_expr) == "ExitStack"
                             for w in withs for i in w.items), call.lineno


class CountingLauncher(Launcher):
    """A launcher with nothing to launch: counts what close() releases."""

    name = "counting"

    def __init__(self) -> None:
        self.released = 0

    def launch(self, kernel, grid, block, smem, args):
        raise AssertionError("not launched in this test")

    def _release(self) -> None:
        self.released += 1


def test_launcher_close_is_idempotent_and_a_context_manager():
    launcher = CountingLauncher()
    with launcher as entered:
        assert entered is launcher and not launcher.closed
    assert launcher.closed and launcher.released == 1
    launcher.close()
    assert launcher.released == 1
    with pytest.raises(RuntimeError, match="boom"), CountingLauncher() as failing:
        raise RuntimeError("boom")
    assert failing.released == 1  # released however the block ends


def test_engine_close_closes_its_launcher_once():
    # CudaInt8Gemm.__init__ needs a GPU; close() and the context-manager protocol do not.
    engine = CudaInt8Gemm.__new__(CudaInt8Gemm)
    CudaInt8Gemm.close(engine)  # never initialised: nothing to close, no error
    engine.launcher = CountingLauncher()
    with engine as entered:
        assert entered is engine
    engine.close()
    assert engine.launcher.released == 1


def test_pycuda_launchers_left_open_are_closed_at_exit():
    # The net behind the `with` blocks: whatever is still registered at exit is closed, each once.
    assert len(cuda_gemm._OPEN_PYCUDA) == 0  # nothing opened in a CPU test
    forgotten = CountingLauncher()
    cuda_gemm._OPEN_PYCUDA.add(forgotten)
    try:
        cuda_gemm._close_open_pycuda_launchers()
        cuda_gemm._close_open_pycuda_launchers()
    finally:
        cuda_gemm._OPEN_PYCUDA.discard(forgotten)
    assert forgotten.released == 1


def test_the_ast_check_catches_an_engine_that_is_never_closed():
    leaky = ast.parse("def f():\n    engine = CudaInt8Gemm('pycuda', 0)\n    return engine.gemm(a, b)\n")
    ok = ast.parse("def f():\n    with CudaInt8Gemm('pycuda', 0) as e:\n        pass\n"
                   "    e2 = stack.enter_context(CudaInt8Gemm('cupy', 0) if x else None)\n")
    for tree, expected in ((leaky, [False]), (ok, [True, True])):
        parents = _parents(tree)
        calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and _called_name(c) == "CudaInt8Gemm"]
        assert [_released(c, parents) for c in calls] == expected
