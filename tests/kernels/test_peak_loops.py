"""The register-only loops that "% of peak" divides by run what they claim: the avx2 loops' eight products per
iteration each on operands of their own, every accumulator in a register (read from the built extension's code).

An earlier avx2 loop multiplied the same two registers in all of its chains: gcc computed the product once an
iteration, and the "limit" timed one vpmaddwd and twelve vpaddd.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import pytest

from costbench.kernels import _gemm

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
JUMP_BACK = re.compile(r"^\s*([0-9a-f]+):\s+j\w+\s+([0-9a-f]+)\s+<")


MULTIPLY = re.compile(r"\s(vpmadd\w*|vpdpbusd)\s")


def _loop(function: str) -> list[str]:
    """The instructions of the loop in ``function`` with the most multiplies (the hot loop; the others sum lanes)."""
    text = _disassembly()
    body = re.search(rf"^[0-9a-f]+ <{function}>:\n(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    if body is None:
        symbols = subprocess.run(["objdump", "-t", _gemm.__file__], capture_output=True, text=True).stdout
        if "no symbols" in symbols.lower() or ".text" not in symbols:
            pytest.skip(f"{_gemm.__file__} has no symbol table (stripped): its functions cannot be told apart")
    assert body, f"{function} not found in {_gemm.__file__}"
    lines = body.group(1).splitlines()
    addr = lambda line: int(line.split(":")[0], 16)
    loops = []
    for i, line in enumerate(lines):
        m = JUMP_BACK.match(line)
        if m and int(m.group(2), 16) < int(m.group(1), 16):
            start = next(j for j, x in enumerate(lines) if ":" in x and addr(x) >= int(m.group(2), 16))
            loops.append(lines[start:i + 1])
    assert loops, f"no loop in {function}"
    return max(loops, key=lambda lp: (sum(bool(MULTIPLY.search(x)) for x in lp), -len(lp)))


@functools.cache
def _disassembly() -> str:
    """The built extension's code, disassembled once for all the tests here."""
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", _gemm.__file__], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("function, products", [("peak_avx2", {"vpmaddwd": 8}),
                                                ("peak_avx2_sat", {"vpmaddubsw": 8, "vpmaddwd": 8})])
def test_avx2_loops_compute_every_product_in_registers(function, products):
    loop = _loop(function)
    for op, n in products.items():
        assert sum(op in line for line in loop) == n, (function, op, loop)
    assert sum("vpaddd" in line for line in loop) == 8, loop
    assert not any("(%rsp)" in line for line in loop), f"an accumulator on the stack in {function}: {loop}"
    # eight different (A, B) register pairs: no product the compiler could compute once for several chains
    firsts = [line.split()[-1] for line in loop if products.get("vpmaddubsw") and "vpmaddubsw" in line] or \
             [line.split()[-1] for line in loop if "vpmaddwd" in line]
    pairs = {tuple(op.split(",")[:2]) for op in firsts}
    assert len(pairs) == 8, (function, loop)


# Every register tile's k-loop, by the name the dispatch tables give its build.
TILES = ([f"v2_tiles_{m}_{v}" for m in range(1, 7) for v in range(1, 5)]
         + [f"vnni_tile_{m}" for m in range(1, 9)]
         + [f"{kind}_{m}" for kind in ("a2_tiles", "a2_raw_tiles", "sat_tiles") for m in range(1, 5)])
STACK_MOVE = re.compile(r"\svmov\w*\s.*\(%rsp")


@pytest.mark.parametrize("function", TILES)
def test_the_tiles_keep_their_accumulators_in_registers(function):
    """No vector moved to or from the stack inside a tile's k-loop. gcc's register allocation of these tiles
    is fragile: a build of the avx512vnni tile whose epilogue alone differed (int32 stores only) spilled and
    reloaded every accumulator each k-step, and ran 0.56-0.88x at seven of eight shapes (exploratory). The avx2
    tiles read A from a stack buffer with vpbroadcastd, which this allows."""
    loop = _loop(function)
    assert any(MULTIPLY.search(line) for line in loop), (function, loop)
    spills = [line for line in loop if STACK_MOVE.search(line)]
    assert not spills, f"{function}'s k-loop moves vectors through the stack: {spills}"


def test_the_vnni_loop_is_its_sixteen_products_and_nothing_else():
    """From the intrinsic, gcc copied each of peak_vnni's chains to another register every iteration and
    spilled two: the ceiling timed 16 vpdpbusd beside 32 vmovdqa and 2 stores."""
    loop = _loop("peak_vnni")
    assert sum("vpdpbusd" in line for line in loop) == 16, loop
    assert not any(re.search(r"\svmov", line) for line in loop), loop
