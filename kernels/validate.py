"""``costbench kernels validate``: is every int8 GEMM here exact on the full int8 range?

Every implementation (ours on each code path, every vendor peer reachable here) runs the same
cases: fresh random full-range operands, extremes (all −128, all 127, u8 255 against ±extremes),
and shapes that fit no tile (1, 7, 33, 1000; K not a multiple of 4, 32 or 64). Integer peers are
compared with numpy's int64 result; float peers (dynamic quantization of fp32 inputs) get inputs
their quantizer maps losslessly onto the integer grid (per-tensor range exactly [−128, 127] or
[0, 255], so scale 1) and are compared with the exact result too. Our outputs are poisoned before
each run, so an element the kernel never writes cannot pass. Our fused epilogue is checked
against an fp64 reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from costbench.kernels import gemm
from costbench.kernels.peers import Peer, our_peers, vendor_peers
from costbench.kernels.reference import int8_gemm_reference

SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 1000), (33, 1000, 7), (1000, 33, 7), (1, 384, 1536), (17, 65, 129),
          (32, 384, 1152), (64, 1536, 384), (100, 3, 17), (129, 127, 31), (48, 1000, 64)]
QUICK_SHAPES = [(1, 7, 33), (7, 33, 1000), (33, 1000, 7), (17, 65, 129), (64, 1536, 384)]
POISON = np.int32(-0x21524111)  # 0xDEADBEEF


@dataclass
class Case:
    """One GEMM to check: operands and a label."""

    label: str
    a: np.ndarray  # int8 or uint8
    b: np.ndarray  # int8


@dataclass
class Tally:
    """What one implementation did over all cases."""

    name: str
    ours: bool
    exact_required: bool = False  # ours on an exact path, or an inexact one on the range where it is exact
    cases: int = 0
    inexact: int = 0
    max_error: float = 0.0
    worst: str = ""
    notes: set[str] = field(default_factory=set)
    skipped: str = ""

    def add(self, label: str, error: float) -> None:
        self.cases += 1
        if error != 0:
            self.inexact += 1
        if error > self.max_error or (self.cases == 1 and not self.worst):
            self.max_error, self.worst = error, label


A_RANGES = {"s8": (-128, 127, np.int8), "u8": (0, 255, np.uint8), "u7": (0, 127, np.uint8)}


def make_cases(rng: np.random.Generator, shapes, a_type: str, weight_range=(-128, 127)) -> list[Case]:
    """Random full-range and extreme operands for each shape, ``a_type`` "s8", "u8" or "u7" (u8 in [0, 127])."""
    lo_a, hi_a, dt = A_RANGES[a_type]
    lo_b, hi_b = weight_range
    cases = []
    for m, k, n in shapes:
        a = rng.integers(lo_a, hi_a + 1, (m, k), dtype=dt)
        b = rng.integers(lo_b, hi_b + 1, (k, n), dtype=np.int8)
        cases.append(Case(f"{a_type} random {m}x{k}x{n}", a, b))
        for a_val, b_val in ((lo_a, lo_b), (hi_a, lo_b), (hi_a, hi_b), (lo_a, hi_b)):
            cases.append(Case(f"{a_type} A={a_val} B={b_val} {m}x{k}x{n}", np.full((m, k), a_val, dt),
                              np.full((k, n), b_val, np.int8)))
    return cases


def _float_inputs(a: np.ndarray) -> np.ndarray:
    """A as float32 whose per-tensor range is exactly the integer type's, so dynamic quantization is lossless."""
    x = a.astype(np.float32)
    lo, hi = (-128.0, 127.0) if a.dtype == np.int8 else (0.0, 255.0)
    flat = x.reshape(-1)
    if flat.size >= 2:
        flat[0], flat[-1] = lo, hi
    return x


def _error(y: np.ndarray, exact: np.ndarray, float_out: bool) -> float:
    if y.shape != exact.shape:
        return float("inf")
    if float_out or y.dtype != np.int32:
        # exact means: the fp32 value of the exact integer result
        y = np.asarray(y, dtype=np.float64)
        target = exact.astype(np.float32).astype(np.float64)
        return float(np.abs(y - target).max()) if y.size else 0.0
    return float(np.abs(y.astype(np.int64) - exact.astype(np.int64)).max()) if y.size else 0.0


def check_peer(peer: Peer, rng: np.random.Generator, shapes, threads: int) -> Tally:
    """Run every case on ``peer`` and tally its errors."""
    tally = Tally(peer.name, peer.ours, getattr(peer, "exact_required", False))
    why = peer.available()
    if why:
        tally.skipped = why
        return tally
    a_types = peer.a_types if peer.kind == "int32" else ("s8", "u8")
    for a_type in a_types:
        for case in make_cases(rng, shapes, a_type, peer.weight_range):
            a = case.a
            m, k = a.shape
            # a float peer's quantizer needs the range present: skip the single-element all-equal extremes
            if peer.kind == "float" and a.size < 2:
                continue
            try:
                prepared = peer.prepare(case.b, a_type, threads)
                if prepared.note:
                    tally.notes.add(prepared.note)
                exact = int8_gemm_reference(a, case.b)
                if peer.ours:
                    out = np.full(exact.shape, POISON, np.int32)
                    pw = gemm.PackedWeight.pack(case.b, peer.isa)
                    y = gemm.int8_gemm(a, pw, threads=threads, out=out)
                    err = _error(y, exact, False)
                elif peer.kind == "float":
                    x = _float_inputs(a)
                    exact = int8_gemm_reference(x.astype(a.dtype), case.b)
                    err = _error(prepared.run(x), exact, True)
                else:
                    err = _error(prepared.run(np.ascontiguousarray(a)), exact, False)
            except Exception as exc:  # a peer that cannot run a case: record, go on
                tally.notes.add(f"{case.label}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                tally.cases += 1
                tally.inexact += 1
                tally.max_error = float("inf")
                continue
            tally.add(case.label, err)
    return tally


def check_fused(rng: np.random.Generator, shapes, threads: int) -> list[tuple[str, float, float]]:
    """Our fused epilogue against fp64: (path, largest relative error, tolerance) per path."""
    out = []
    for isa in gemm.supported_isas():
        worst = 0.0
        for m, k, n in shapes:
            for a_type in ("s8", "u8"):
                a = rng.integers(-128, 128, (m, k), dtype=np.int8) if a_type == "s8" else \
                    rng.integers(0, 256, (m, k), dtype=np.uint8)
                b = rng.integers(-128, 128, (k, n), dtype=np.int8)
                zp = rng.integers(-128, 256, m).astype(np.int32)
                rs = rng.uniform(1e-3, 1e-1, m).astype(np.float32)
                cs = rng.uniform(1e-3, 1e-1, n).astype(np.float32)
                bias = rng.normal(size=n).astype(np.float32)
                pw = gemm.PackedWeight.pack(b, isa)
                poisoned = np.full((m, n), np.nan, np.float32)
                y = gemm.int8_gemm_fused(a, pw, a_zero_point=zp, row_scale=rs, col_scale=cs, bias=bias,
                                         threads=threads, out=poisoned)
                acc = a.astype(np.int64) @ b.astype(np.int64) - zp[:, None].astype(np.int64) * b.astype(np.int64).sum(0)
                ref = acc * rs[:, None].astype(np.float64) * cs[None, :].astype(np.float64) + bias
                scale = np.abs(acc) * rs[:, None] * cs[None, :] + np.abs(bias) + 1e-30
                worst = max(worst, float(np.nanmax(np.abs(y - ref) / scale)) if y.size else 0.0,
                            float("inf") if np.isnan(y).any() else 0.0)
        out.append((isa, worst, FUSED_RTOL))
    return out


# float32(int) then two fp32 roundings (scale products, one FMA): a few ulp of the magnitude
FUSED_RTOL = 4 * 2.0**-23


def run_validation(threads: int, quick: bool = False, seed: int | None = None):
    """Check ours and every peer; returns (tallies, fused results, ok). ``ok`` is False if ours is ever inexact
    where it must be exact (an inexact path's full-range tally is reported, not required)."""
    rng = np.random.default_rng(seed)  # fresh inputs every run unless a seed is given
    shapes = QUICK_SHAPES if quick else SHAPES
    tallies = [check_peer(p, rng, shapes, threads) for p in [*our_peers(), *vendor_peers()]]
    fused = check_fused(rng, shapes, threads)
    ok = all(t.inexact == 0 for t in tallies if t.exact_required) and all(err <= tol for _, err, tol in fused)
    return tallies, fused, ok
