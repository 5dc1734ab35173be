"""PyTorch eager on the CPU: the reference every other backend is compared against.

torch is imported inside the methods so that loading the registry stays cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session
from costbench.harness.artifacts import FORMAT_TORCH, Artifact


class TorchOptions(BackendOptions):
    """Options for the torch backend."""

    interop_threads: int | None = Field(
        default=None,
        ge=1,
        description="Inter-op threads (torch.set_num_interop_threads); None keeps torch's default. "
        "torch accepts this once per process, before any parallel work.",
    )


def _missing_reason(exc: ImportError) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
        return "torch is not installed: pip install torch"
    # Installed but broken (a missing shared library, an ABI mismatch): reinstalling is the fix.
    return f"torch failed to import ({type(exc).__name__}: {exc}): pip install --force-reinstall torch"


class TorchSession(Session):
    """An eval-mode nn.Module fed through torch.from_numpy (zero-copy) under inference_mode."""

    def __init__(self, module: Any, artifact: Artifact, batch_size: int):
        import torch

        self._torch = torch
        self._module = module
        self._inputs = list(artifact.inputs)
        self._batch_size = batch_size

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the module on ``inputs`` (keyed by artifact input name); outputs as numpy, in model order."""
        torch = self._torch
        args = []
        for spec in self._inputs:
            try:
                array = inputs[spec.name]
            except KeyError:
                raise KeyError(
                    f"missing input {spec.name!r}; the model takes {[s.name for s in self._inputs]}"
                ) from None
            if array.dtype != np.dtype(spec.dtype):
                array = array.astype(spec.dtype)
            args.append(torch.from_numpy(array))
        with torch.inference_mode():
            out = self._module(*args)
        return _to_numpy_list(out, torch)

    def close(self) -> None:
        """Drop the module so its weights can be freed."""
        self._module = None

    def info(self) -> dict[str, Any]:
        """Thread settings actually in effect and the execution mode."""
        return {
            "mode": "eager",
            "device": "cpu",
            "threads": self._torch.get_num_threads(),
            "interop_threads": self._torch.get_num_interop_threads(),
            "batch_size": self._batch_size,
        }


def _to_numpy_list(out: Any, torch: Any) -> list[np.ndarray]:
    """Flatten a tensor, a (nested) tuple/list of tensors, or a dict of them into numpy arrays."""
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, (tuple, list)):
        return [a for item in out for a in _to_numpy_list(item, torch)]
    if isinstance(out, dict):  # includes transformers' ModelOutput, which keeps insertion order
        return [a for item in out.values() for a in _to_numpy_list(item, torch)]
    raise TypeError(
        f"model returned {type(out).__name__}; the torch backend handles a tensor, "
        "a tuple/list of tensors or a dict of tensors"
    )


class TorchBackend(Backend):
    """PyTorch eager mode on the CPU, loading a whole pickled nn.Module."""

    name = "torch"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32",), formats=(FORMAT_TORCH,))
    Options = TorchOptions

    def probe(self) -> Availability:
        """Available when torch imports; reports its version."""
        try:
            import torch
        except ImportError as exc:
            return Availability.missing(_missing_reason(exc))
        except Exception as exc:  # a probe never raises
            return Availability.missing(f"torch failed to import ({type(exc).__name__}: {exc})")
        return Availability.ok(torch=torch.__version__)

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load the pickled module, put it in eval mode and apply the thread settings."""
        if device not in self.capabilities.devices:
            raise ValueError(
                f"torch backend: device {device!r} is not supported; supported: {', '.join(self.capabilities.devices)}"
            )
        if artifact.format not in self.capabilities.formats:
            raise ValueError(
                f"torch backend: artifact format {artifact.format!r} is not supported; "
                f"supported: {', '.join(self.capabilities.formats)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        opts = options if isinstance(options, TorchOptions) else TorchOptions.model_validate(options.model_dump())

        import torch

        # Every case runs in its own child process, so process-global thread settings
        # affect only this case and need no restoring.
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        if opts.interop_threads is not None and opts.interop_threads != torch.get_num_interop_threads():
            try:
                torch.set_num_interop_threads(opts.interop_threads)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"torch backend: cannot set interop_threads={opts.interop_threads}: torch allows it once per "
                    f"process, before any parallel work, and this process already uses "
                    f"{torch.get_num_interop_threads()} ({exc})"
                ) from exc

        # Pickled whole modules need full unpickling; artifacts come from our own cache.
        module = torch.load(artifact.path, weights_only=False, map_location="cpu")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"{artifact.path} holds a {type(module).__name__}, not a torch.nn.Module")
        module.eval()
        return TorchSession(module, artifact, batch_size)
