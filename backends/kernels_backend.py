"""``costbench-kernels``: a pickled torch module whose ``nn.Linear`` layers run on costbench's int8 GEMM.

The artifact is the fp32 torch module (FORMAT_TORCH); ``prepare`` swaps every Linear for an
:class:`~costbench.kernels.linear.Int8Linear` (per-channel int8 weights, per-token dynamic u8
activations, packed for this CPU) and runs the rest of the model in PyTorch eager, so the same
model runs here, on ONNX Runtime int8 and on PyTorch's own dynamic int8, side by side.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session
from costbench.core.artifacts import FORMAT_TORCH, Artifact


class KernelsOptions(BackendOptions):
    """Options for the costbench-kernels backend."""

    isa: Literal["auto", "amx", "avx512vnni", "avx2", "generic", "avx2-saturating"] = Field(
        default="auto",
        description="Kernel code path; auto picks the fastest exact one this CPU supports. avx2-saturating "
                    "(never picked by auto) quantizes activations to 7 bits so that vpmaddubsw's saturating pair "
                    "sums stay exact: faster than avx2 on CPUs without VNNI, at a bit of activation resolution.",
    )
    min_features: int = Field(
        default=1, ge=1, description="Linear layers with fewer input or output features stay fp32."
    )


class KernelsSession(Session):
    """PyTorch eager around the swapped Linear layers; host numpy in, host numpy out."""

    def __init__(self, module: Any, artifact: Artifact, batch_size: int, swapped: list[str], isa: str, threads: int):
        from costbench.backends.torch_backend import TorchSession

        self._inner = TorchSession(module, artifact, batch_size)
        self._swapped = swapped
        self._isa = isa
        self._threads = threads

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._inner.run(inputs)

    def close(self) -> None:
        self._inner.close()

    def info(self) -> dict[str, Any]:
        """The torch settings plus the kernel path, its threads and which layers were swapped."""
        return {**self._inner.info(), "kernel_isa": self._isa, "kernel_threads": self._threads,
                "int8_layers": len(self._swapped), "int8_layer_names": self._swapped[:50]}


class KernelsBackend(Backend):
    """Our int8 GEMM kernels, through Int8Linear, on the CPU."""

    name = "costbench-kernels"
    capabilities = Capabilities(devices=("cpu",), precisions=("int8",), formats=(FORMAT_TORCH,))
    Options = KernelsOptions

    def probe(self) -> Availability:
        """Available when torch imports and the C extension is built; reports the kernel paths of this CPU."""
        try:
            import torch
        except ImportError:
            return Availability.missing("torch is not installed: pip install torch")
        except Exception as exc:
            return Availability.missing(f"torch failed to import ({type(exc).__name__}: {exc})")
        try:
            from costbench.kernels.gemm import supported_isas
        except ImportError as exc:
            return Availability.missing(
                f"the C extension costbench.kernels._gemm is not built ({exc}): reinstall costbench with "
                "pip install -e . (needs a C compiler)"
            )
        return Availability.ok(torch=torch.__version__, kernel_paths=",".join(supported_isas()))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load the pickled module, swap its Linear layers for Int8Linear, apply the thread settings."""
        self.check_request(artifact, batch_size, device)
        opts: KernelsOptions = self.own_options(options)

        import torch

        from costbench.kernels.gemm import best_isa, default_threads
        from costbench.kernels.linear import swap_linear_layers

        threads = opts.threads or default_threads()
        torch.set_num_threads(threads)  # the ops around the Linear layers (one child process per case)
        isa = best_isa() if opts.isa == "auto" else opts.isa
        module = torch.load(artifact.path, weights_only=False, map_location="cpu")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"{artifact.path} holds a {type(module).__name__}, not a torch.nn.Module")
        module.eval()
        if type(module) is torch.nn.Linear:
            module = torch.nn.Sequential(module)
        swapped = swap_linear_layers(module, isa=isa, threads=threads, min_features=opts.min_features)
        if not swapped:
            raise ValueError("costbench-kernels: the model has no nn.Linear layer to run on the int8 kernel")
        return KernelsSession(module, artifact, batch_size, swapped, isa, threads)
