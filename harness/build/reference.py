"""The fp32 reference outputs every variant is compared with, computed once per model and data set and cached."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from costbench.harness.build.zoo.base import SOURCE_HF, SOURCE_ONNX, SOURCE_TFLITE, ModelBundle

REFERENCE_BATCH = 16
GREEDY_TOKENS = 16  # a causal LM's reference greedy continuation of each evaluation prompt


def _data_hash(bundle: ModelBundle) -> str:
    h = hashlib.sha256(bundle.source_hash.encode())
    for name in sorted(bundle.evaluation.inputs):
        arr = np.ascontiguousarray(bundle.evaluation.inputs[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:24]


def _compute(bundle: ModelBundle) -> np.ndarray:
    """fp32 outputs: PyTorch eager for torch models, ONNX Runtime's CPU provider for ONNX files, the LiteRT
    interpreter (XNNPACK, one sample at a time: a .tflite usually has a static batch) for .tflite files."""
    parts = []
    batch = bundle.details.get("fixed_batch") or REFERENCE_BATCH  # an ONNX file may accept one batch size only
    if bundle.source_kind == SOURCE_TFLITE:
        from costbench.backends.litert_backend import LiteRTBackend
        from costbench.core.artifacts import FORMAT_TFLITE, Artifact

        backend = LiteRTBackend()
        art = Artifact(format=FORMAT_TFLITE, path=Path(bundle.details["tflite_path"]), key="reference",
                       inputs=list(bundle.inputs), outputs=list(bundle.outputs))
        session = backend.prepare(art, backend.parse_options({}), 1)
        try:
            for feed, real in bundle.evaluation.batches(1):
                parts.append(np.asarray(session.run(feed)[0], dtype=np.float64)[:real])
        finally:
            session.close()
    elif bundle.source_kind == SOURCE_ONNX:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
        for feed, real in bundle.evaluation.batches(batch):
            parts.append(np.asarray(sess.run(None, feed)[0], dtype=np.float64)[:real])
    else:
        import torch

        module = bundle.torch_module()
        with torch.inference_mode():
            for feed, real in bundle.evaluation.batches(batch):
                args = [torch.from_numpy(feed[spec.name]) for spec in bundle.inputs]
                out = module(*args)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                elif isinstance(out, dict):
                    out = next(iter(out.values()))
                parts.append(out.double().numpy()[:real])
    return np.concatenate(parts, axis=0)


def _path(bundle: ModelBundle, cache_dir: Path) -> Path:
    return cache_dir / "references" / f"{bundle.name}-{_data_hash(bundle)}.npy"


def cached_reference(bundle: ModelBundle, cache_dir: Path) -> np.ndarray | None:
    """The cached fp32 reference for ``bundle.evaluation``, or None when it has not been computed."""
    path = _path(bundle, cache_dir)
    return np.load(path) if path.exists() else None


def reference_outputs(bundle: ModelBundle, cache_dir: Path) -> np.ndarray:
    """The fp32 reference for ``bundle.evaluation``, from the cache when the model and data are unchanged.

    A causal LM's continuations (:func:`cached_continuations`) are saved first, so a cached reference
    implies them."""
    path = _path(bundle, cache_dir)
    if path.exists():
        return np.load(path)
    if bundle.source_kind == SOURCE_HF:
        _save(_continuations_path(bundle, cache_dir), _greedy_continuations(bundle))
    ref = _compute(bundle)
    _save(path, ref)
    return ref


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _continuations_path(bundle: ModelBundle, cache_dir: Path) -> Path:
    return cache_dir / "references" / f"{bundle.name}-{_data_hash(bundle)}-greedy{GREEDY_TOKENS}.npy"


def cached_continuations(bundle: ModelBundle, cache_dir: Path) -> np.ndarray | None:
    """fp32's greedy continuation (:data:`GREEDY_TOKENS` ids) of each evaluation prompt of a causal LM, or None."""
    path = _continuations_path(bundle, cache_dir)
    return np.load(path) if path.exists() else None


def _greedy_continuations(bundle: ModelBundle) -> np.ndarray:
    """PyTorch eager fp32, Transformers ``generate``: greedy, exactly GREEDY_TOKENS new tokens (no early stop)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(bundle.hf_path), dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    parts = []
    with torch.inference_mode():
        for feed, real in bundle.evaluation.batches(REFERENCE_BATCH):
            ids = torch.from_numpy(feed["input_ids"])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS,
                                 min_new_tokens=GREEDY_TOKENS, do_sample=False, num_beams=1,
                                 pad_token_id=eos[0] if isinstance(eos, list) else eos,
                                 temperature=None, top_p=None, top_k=None)
            parts.append(out[:, ids.shape[1]:].numpy()[:real])
    return np.concatenate(parts, axis=0)
