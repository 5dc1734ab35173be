"""``Int8Linear``: a drop-in for ``torch.nn.Linear`` that runs on the costbench int8 GEMM.

Weights are quantized once, symmetric per output channel (``quantize_symmetric_per_channel``),
and packed for this CPU. Activations are quantized on every call, per token (per row), to u8 with
a zero point; quantization, the exact int8 GEMM and the fp32 epilogue
``(q_x·q_w − zp ⊗ colsum) · s_x ⊗ s_w + bias`` (optionally followed by exact GELU) run in one C call.
Inference only: no gradients.

:func:`swap_linear_layers` also fuses what BERT-style encoders run back to back: the query, key and
value projections of a layer become one GEMM (:class:`FusedInt8Linear`, bit-identical to three), the
intermediate dense layer takes its GELU into the epilogue, the output blocks take the skip
connection's add (:class:`Int8ResidualOutput`, bit-identical to adding after), and a layer's
feed-forward pair runs as one C job (:class:`Int8FeedForwardOutput`, bit-identical to the two layers).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from costbench.kernels import _gemm
from costbench.kernels.gemm import ACTIVATIONS, ISA_IDS, PackedWeight, best_isa, default_threads, use_openmp
from costbench.kernels.reference import quantize_symmetric_per_channel

_TORCH_OPENMP: str | None | bool = False  # False: not looked up yet


def torch_openmp_runtime() -> str | None:
    """The GNU OpenMP runtime (libgomp) torch runs its CPU operators on, once set with ``use_openmp``.

    Between two of its operators torch's OpenMP threads spin, waiting for the next; a GEMM on threads
    of its own then shares the cores with them. Running the GEMM on torch's team avoids that. Found in
    ``/proc/self/maps`` (Linux); None where there is no such runtime (then our own threads run).
    """
    global _TORCH_OPENMP
    if _TORCH_OPENMP is False:
        _TORCH_OPENMP = None
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({ln.split()[-1] for ln in f if "libgomp" in ln and "/" in ln})
        except OSError:
            paths = []
        torch_dir = os.path.dirname(torch.__file__)
        for path in sorted(paths, key=lambda p: not p.startswith(torch_dir)):  # torch's own first
            try:
                use_openmp(path)
            except RuntimeError:
                continue
            _TORCH_OPENMP = path
            break
    return _TORCH_OPENMP


class Int8Linear(nn.Module):
    """``y = x·Wᵀ + b`` with int8 per-channel weights and dynamic per-token u8 activations.

    Build it with :meth:`from_linear`. ``threads`` is the most threads one call may use (default:
    all cores this process may run on). Pickles as the int8 weight and scales, and packs again on
    load for the CPU it lands on.
    """

    def __init__(self, in_features: int, out_features: int, w_q: np.ndarray, w_scale: np.ndarray,
                 bias: np.ndarray | None, *, isa: str | None = None, threads: int | None = None,
                 activation: str | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.threads = threads
        self.activation = activation  # applied in the epilogue: "gelu" (exact, erf) or None
        self._setup(np.ascontiguousarray(w_q, dtype=np.int8), np.ascontiguousarray(w_scale, dtype=np.float32),
                    None if bias is None else np.ascontiguousarray(bias, dtype=np.float32), isa)

    def _setup(self, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, isa: str | None) -> None:
        if w_q.shape != (self.out_features, self.in_features):
            raise ValueError(f"weight shape {w_q.shape} != ({self.out_features}, {self.in_features})")
        self.w_q = w_q  # (out, in), kept for pickling and inspection
        self.w_scale = w_scale
        self.bias_f32 = bias
        self.packed = PackedWeight.from_linear_weight(w_q, isa)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, isa: str | None = None, threads: int | None = None,
                    activation: str | None = None) -> "Int8Linear":
        """Quantize an ``nn.Linear``'s weight per output channel (symmetric int8) and pack it."""
        return cls.from_linears([linear], isa=isa, threads=threads, activation=activation)

    @classmethod
    def from_linears(cls, linears: list[nn.Linear], *, isa: str | None = None, threads: int | None = None,
                     activation: str | None = None) -> "Int8Linear":
        """One layer whose output columns are those of ``linears`` (same input) side by side.

        Per-channel quantization treats each output row on its own, so the int8 weights and scales are
        the ones each layer would get alone. Biases: all or none.
        """
        if len({lin.in_features for lin in linears}) != 1 or len({lin.bias is None for lin in linears}) != 1:
            raise ValueError("layers to fuse need the same in_features and all or no biases")
        w = torch.cat([lin.weight.detach().to(torch.float32).cpu() for lin in linears]).numpy()
        w_q, w_scale = quantize_symmetric_per_channel(w, axis=0)
        bias = None if linears[0].bias is None else \
            torch.cat([lin.bias.detach().to(torch.float32).cpu() for lin in linears]).numpy()
        return cls(linears[0].in_features, w.shape[0], w_q, w_scale, bias, isa=isa, threads=threads,
                   activation=activation)

    @property
    def isa(self) -> str:
        return self.packed.isa

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``act(x·Wᵀ + b)``, plus ``residual`` (a skip connection, shaped as the output) when given.

        On the CPU in float32 the residual is added in the epilogue, bit-identical to adding it after.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected last dimension {self.in_features}, got {tuple(x.shape)}")
        if residual is not None:
            expected = (*x.shape[:-1], self.out_features)
            if tuple(residual.shape) != expected:
                raise ValueError(f"residual: expected shape {expected}, got {tuple(residual.shape)}")
            if x.is_cuda or x.dtype != torch.float32 or residual.dtype != torch.float32 or residual.is_cuda:
                return self.forward(x) + residual  # the unfused sum, in the caller's dtype and device
        if x.is_cuda:  # on an NVIDIA GPU: the Triton int8 GEMM (costbench.kernels.gpu.linear)
            from costbench.kernels.gpu.linear import forward_from_int8

            y = forward_from_int8(self, x)
            return torch.nn.functional.gelu(y) if self.activation == "gelu" else y
        lead = x.shape[:-1]
        x2 = x.detach().reshape(-1, self.in_features)
        if x2.dtype != torch.float32 or x2.device.type != "cpu":
            x2 = x2.to(device="cpu", dtype=torch.float32)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        m = x2.shape[0]
        y = torch.empty((m, self.out_features), dtype=torch.float32)
        res = None if residual is None else residual.detach().reshape(m, self.out_features).contiguous().numpy()
        # costbench.kernels.gemm.int8_linear without its argument checks (every operand here is already
        # float32, contiguous and of the right length): the same C call, a few microseconds less per layer
        pw = self.packed
        _gemm.linear(ISA_IDS[pw.isa], x2.numpy(), m, pw.k, pw.k, pw.data, pw.n, pw.colsum, self.w_scale,
                     self.bias_f32, y.numpy(), self.threads or default_threads(), None, None,
                     torch_openmp_runtime() is not None, ACTIVATIONS[self.activation], res)
        y = y.view(*lead, self.out_features)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias_f32 is not None}, isa={self.isa}, threads={self.threads or 'all'}{act}")

    # Pickle the int8 weight, not the packed bytes: the layout depends on the CPU that loads it.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("packed", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("activation", None)  # pickled before the fused epilogue existed
        self.__dict__.update(state)
        self.packed = PackedWeight.from_linear_weight(self.w_q, None)


class FusedInt8Linear(nn.Module):
    """Several projections of the same input as one :class:`Int8Linear` (e.g. a layer's Q, K and V).

    One per-token quantization of x and one GEMM instead of one each; the output columns are the
    layers' side by side, bit-identical to running them apart. The parts (:class:`Int8LinearPart`)
    take their columns as views. The first part called on an input runs the GEMM; the others, called
    on the same tensor object, take the kept result, which is dropped once every part has had it.
    A part called on another input (cross-attention's keys) runs the GEMM again for that input.
    """

    def __init__(self, layer: Int8Linear, sizes: list[int]):
        super().__init__()
        self.layer = layer
        self.bounds = [int(b) for b in np.cumsum([0, *sizes])]
        self._forget()

    def _forget(self) -> None:
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._waiting: set[int] = set()

    def part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Columns of part ``i`` of the fused output for ``x``."""
        if self._x is not x or (i not in self._waiting and self._waiting):  # new input, or a part asked again
            self._y, self._x = self.layer(x), x
            self._waiting = set(range(len(self.bounds) - 1))
        y = self._y
        self._waiting.discard(i)
        if not self._waiting:  # every part has its columns: keep nothing alive between calls
            self._forget()
        return y[..., self.bounds[i]:self.bounds[i + 1]]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_x=None, _y=None, _waiting=set())
        return state


class Int8LinearPart(nn.Module):
    """One layer's place in a :class:`FusedInt8Linear`: its output columns, as a view."""

    def __init__(self, fused: FusedInt8Linear, index: int):
        super().__init__()
        self.fused = fused
        self.index = index
        self.in_features = fused.layer.in_features
        self.out_features = fused.bounds[index + 1] - fused.bounds[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.part(x, self.index)

    def extra_repr(self) -> str:
        return f"part {self.index} of {len(self.fused.bounds) - 1}, out_features={self.out_features}"


QKV_NAMES = ("query", "key", "value")  # BERT-family self-attention (transformers' naming)


class Int8ResidualOutput(nn.Module):
    """A BERT-style output block, ``LayerNorm(dropout(dense(h)) + input)``, with the skip connection's add
    in the int8 dense layer's epilogue (in eval mode, where dropout is the identity): one pass over the
    output less per block. Same attribute names as the block it replaces (transformers' BertSelfOutput
    and BertOutput); called as they are, ``(hidden_states, input_tensor)``.
    """

    def __init__(self, dense: Int8Linear, dropout: nn.Module, layer_norm: nn.Module):
        super().__init__()
        self.dense = dense
        self.dropout = dropout
        self.LayerNorm = layer_norm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        if self.training:  # dropout acts between the layer and the add
            return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)
        return self.LayerNorm(self.dense(hidden_states, residual=input_tensor))


def feed_forward(first: "Int8Linear", second: "Int8Linear", x: torch.Tensor,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
    """``second(first(x), residual=residual)`` with ``first`` applying GELU: on avx512vnni, for float32 CPU
    tensors, one C job that carries each block of rows through both GEMMs, so the intermediate
    activations stay in the thread's cache; bit-identical to the two calls, which run otherwise.
    The job wins at every row count measured, 1 to 512 (``kernels-vnni-7/ffn_rows.txt``): a thread
    reading all of both weights for a few rows costs less than two calls' hand-overs."""
    threads = first.threads or default_threads()
    lead = x.shape[:-1]
    m = math.prod(lead)
    fused = (first.activation == "gelu" and first.isa == second.isa == "avx512vnni"
             and second.in_features == first.out_features and x.shape[-1] == first.in_features
             and x.device.type == "cpu" and x.dtype == torch.float32
             and (residual is None or (residual.dtype == torch.float32 and residual.device.type == "cpu"
                                       and tuple(residual.shape) == (*lead, second.out_features))))
    if not fused:
        return second(first(x), residual=residual)
    x2 = x.detach().reshape(m, first.in_features).contiguous()
    res = None if residual is None else residual.detach().reshape(m, second.out_features).contiguous().numpy()
    y = torch.empty((m, second.out_features), dtype=torch.float32)
    p1, p2 = first.packed, second.packed
    _gemm.ffn(x2.numpy(), m, p1.k, p1.k, p1.data, p1.n, p1.colsum, first.w_scale, first.bias_f32,
              p2.data, p2.n, p2.colsum, second.w_scale, second.bias_f32, y.numpy(), threads,
              torch_openmp_runtime() is not None, res)
    return y.view(*lead, second.out_features)


class Int8FeedForwardOutput(nn.Module):
    """A BERT-style layer's feed-forward pair as one block: ``LayerNorm(dropout(dense(intermediate_dense(h))) +
    input)``, ``intermediate_dense`` applying GELU in its epilogue, run by :func:`feed_forward` (in eval
    mode). It takes the place of the output block
    (BertOutput), and the layer's ``intermediate`` becomes ``nn.Identity``, so the layer's call
    ``output(intermediate(x), x)`` reaches it as ``(x, x)``.
    """

    def __init__(self, intermediate_dense: Int8Linear, dense: Int8Linear, dropout: nn.Module, layer_norm: nn.Module):
        super().__init__()
        if intermediate_dense.activation != "gelu":
            raise ValueError("intermediate_dense must apply GELU in its epilogue")
        self.intermediate_dense = intermediate_dense
        self.dense = dense
        self.dropout = dropout
        self.LayerNorm = layer_norm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        if self.training:  # dropout acts between the second layer and the add
            return self.LayerNorm(self.dropout(self.dense(self.intermediate_dense(hidden_states))) + input_tensor)
        return self.LayerNorm(feed_forward(self.intermediate_dense, self.dense, hidden_states, input_tensor))


def _is_residual_output(block: nn.Module) -> bool:
    """True for a block with ``dense``, ``dropout`` and ``LayerNorm`` whose forward(h, input) computes
    ``LayerNorm(dropout(dense(h)) + input)``: checked by running it (in eval mode, on random inputs)
    against that formula, so a block named alike that computes something else is left alone."""
    dense, drop, norm = (getattr(block, n, None) for n in ("dense", "dropout", "LayerNorm"))
    if type(dense) is not nn.Linear or not isinstance(drop, nn.Dropout) or not isinstance(norm, nn.LayerNorm):
        return False
    if set(dict(block.named_children())) != {"dense", "dropout", "LayerNorm"}:
        return False

    def run(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.randn(3, dense.in_features, generator=gen, dtype=dense.weight.dtype)
        r = torch.randn(3, dense.out_features, generator=gen, dtype=dense.weight.dtype)
        return block(h, r), norm(dense(h) + r)

    return _matches_on_probe(block, run)


def _matches_on_probe(module: nn.Module, run: Any) -> bool:
    """``run(generator)`` returns (what ``module`` computes, what the pattern computes) on inputs it draws
    from a fixed seed; True when they are equal. ``module`` is in eval mode meanwhile (dropout off), and
    an exception (another signature or shape contract) means not the pattern. The probe is fixed, so
    whether a module qualifies never varies."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            got, expected = run(torch.Generator().manual_seed(0))
            return bool(torch.equal(got, expected))
    except Exception:
        return False
    finally:
        module.train(was_training)


def _exact_gelu(act: nn.Module) -> bool:
    """True for an activation module that is exact (erf) GELU: what the fused epilogue computes."""
    if isinstance(act, nn.GELU):
        return act.approximate == "none"
    return type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is torch.nn.functional.gelu


def _is_feed_forward_layer(layer: nn.Module) -> bool:
    """True for a transformer layer whose ``feed_forward_chunk(x)`` computes ``output(act(intermediate.dense(x)),
    x)`` with an exact-GELU ``intermediate`` (``dense`` and ``intermediate_act_fn`` only) and a BERT-style
    output block: checked by running it on a fixed random probe, in eval mode."""
    inter, out = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    chunk = getattr(layer, "feed_forward_chunk", None)
    if not callable(chunk) or not isinstance(inter, nn.Module) or not isinstance(out, nn.Module):
        return False
    if set(dict(inter.named_children())) != {"dense", "intermediate_act_fn"} or type(inter.dense) is not nn.Linear:
        return False
    if not _exact_gelu(inter.intermediate_act_fn) or not _is_residual_output(out):
        return False
    dense = inter.dense

    def run(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(3, dense.in_features, generator=gen, dtype=dense.weight.dtype)
        return chunk(x), out.LayerNorm(out.dense(torch.nn.functional.gelu(dense(x))) + x)

    return _matches_on_probe(layer, run)


def _replace(parent: nn.Module, attr: str, new: nn.Module) -> None:
    """Put ``new`` where ``parent.attr`` was, in the mode (train or eval) of the module it replaces: a new
    module starts in training mode, and an output block left there would skip its fused epilogue."""
    new.train(getattr(parent, attr).training)
    setattr(parent, attr, new)


def _fuse(module: nn.Module, isa: str, threads: int | None, min_features: int) -> list[str]:
    """Fuse Q/K/V projections, dense+GELU pairs and dense+skip-connection blocks inside ``module`` (in
    place); the layers' names."""
    def eligible(lin: Any) -> bool:
        return type(lin) is nn.Linear and min(lin.in_features, lin.out_features) >= min_features

    fused: list[str] = []
    done: list[str] = []  # blocks already fused whole: nothing inside them is looked at again
    blocks = dict(module.named_modules())
    for name, child in list(blocks.items()):
        prefix = f"{name}." if name else ""
        if any(name == d or name.startswith(d + ".") for d in done):
            continue
        inter = getattr(child, "intermediate", None)
        if eligible(getattr(inter, "dense", None)) and eligible(getattr(getattr(child, "output", None), "dense", None)) \
                and _is_feed_forward_layer(child):
            # BertLayer and its kin: the feed-forward pair becomes one block, the intermediate a pass-through
            out = child.output
            _replace(child, "output", Int8FeedForwardOutput(
                Int8Linear.from_linear(inter.dense, isa=isa, threads=threads, activation="gelu"),
                Int8Linear.from_linear(out.dense, isa=isa, threads=threads), out.dropout, out.LayerNorm))
            _replace(child, "intermediate", nn.Identity())
            fused += [prefix + "intermediate.dense", prefix + "output.dense"]
            done += [prefix + "intermediate", prefix + "output"]
        if name and eligible(getattr(child, "dense", None)) and _is_residual_output(child):
            # BertSelfOutput / BertOutput: the skip connection's add moves into the dense layer's epilogue
            parent_name, _, attr = name.rpartition(".")
            _replace(blocks[parent_name], attr, Int8ResidualOutput(
                Int8Linear.from_linear(child.dense, isa=isa, threads=threads), child.dropout, child.LayerNorm))
            fused.append(prefix + "dense")
            continue
        parts = [getattr(child, n, None) for n in QKV_NAMES]
        if all(eligible(p) for p in parts) and len({p.in_features for p in parts}) == 1 \
                and len({p.bias is None for p in parts}) == 1:
            group = FusedInt8Linear(Int8Linear.from_linears(parts, isa=isa, threads=threads),
                                    [p.out_features for p in parts])
            for i, n in enumerate(QKV_NAMES):
                _replace(child, n, Int8LinearPart(group, i))
                fused.append(prefix + n)
        dense, act = getattr(child, "dense", None), getattr(child, "intermediate_act_fn", None)
        if eligible(dense) and isinstance(act, nn.Module) and _exact_gelu(act):
            # BertIntermediate and its kin: dense, then GELU; the GELU moves into the epilogue
            _replace(child, "dense", Int8Linear.from_linear(dense, isa=isa, threads=threads, activation="gelu"))
            _replace(child, "intermediate_act_fn", nn.Identity())
            fused.append(prefix + "dense")
    return fused


def swap_linear_layers(module: nn.Module, *, isa: str | None = None, threads: int | None = None,
                       min_features: int = 1, fuse: bool = True) -> list[str]:
    """Replace every ``nn.Linear`` inside ``module`` (in place) by an :class:`Int8Linear`.

    Layers with fewer than ``min_features`` input or output features stay fp32. With ``fuse``, a
    module's ``query``/``key``/``value`` Linears become one :class:`FusedInt8Linear` and a ``dense``
    Linear followed by an exact-GELU ``intermediate_act_fn`` gets the GELU in its epilogue (that
    module's activation becomes ``nn.Identity``), and a BERT-style output block (``LayerNorm(dropout(
    dense(h)) + input)``) becomes an :class:`Int8ResidualOutput` that adds the input in the epilogue;
    a layer whose ``feed_forward_chunk(x)`` is ``output(intermediate(x), x)`` with those two blocks gets
    them as one :class:`Int8FeedForwardOutput` (its ``intermediate`` becomes ``nn.Identity``). Every
    module built takes the train/eval mode of the one it replaces.
    Returns the qualified names of the layers swapped.
    ``module`` itself, if a Linear, is not replaced (the caller holds the reference); wrap it in a
    container first.
    """
    isa = isa or best_isa()
    swapped: list[str] = _fuse(module, isa, threads, min_features) if fuse else []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) is nn.Linear and min(sub.in_features, sub.out_features) >= min_features:
                _replace(child, attr, Int8Linear.from_linear(sub, isa=isa, threads=threads))
                swapped.append(f"{name}.{attr}" if name else attr)
    return swapped
