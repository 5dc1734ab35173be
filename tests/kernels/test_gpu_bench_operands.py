"""The GPU benchmark's per-operand buffers (padded A, outputs, packed weights) belong to their operand set.

On the H200 they were cached by ``id(ops)`` and outlived it: the next shape's operands, given the same id,
were fed the previous shape's buffers, and the M=16 and 4096³ rows failed. ``torch._int_mm`` runs on the
CPU, so the vendor path can be checked here shape after shape, with fresh operands each time.
"""

from __future__ import annotations

import gc

import pytest
import torch

from costbench.kernels.gpu import bench as gb


@pytest.mark.parametrize("shapes", [[(8, 64, 32), (16, 32, 64), (40, 64, 16), (8, 64, 32)]])
def test_int_mm_is_exact_shape_after_shape(shapes, seed):
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    impls = [i for i in gb.implementations(cpu) if "_int_mm" in i.name]
    assert impls, "the _int_mm peers are always listed"
    for m, k, n in shapes:
        ops = gb.Operands(m, k, n, cpu, 1 << 16, gen)
        for impl in impls:
            y = impl.make(ops, 0)()
            assert impl.check(ops, y) == "", f"{impl.name} at {m}x{k}x{n} (seed {seed})"
        # what the calls made from these operands is kept on them, and goes with them
        assert ("out", "mm", 0) in ops.scratch
        assert (("padded", 0) in ops.scratch) == (m <= 16)
        del ops
        gc.collect()
