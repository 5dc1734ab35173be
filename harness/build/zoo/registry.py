"""The zoo by name, and ``load_bundle``: the one way the harness turns a suite's ModelSpec into a ModelBundle.

Zoo models come from the ``costbench.models`` entry-point group (or ``COSTBENCH_EXTRA_MODELS``), the
same mechanism as backends and recipes (:mod:`costbench.core.plugins`): a third party adds one with a
pip install. Their modules keep torch out of their top level, so :func:`source_kind` (planning) loads
nothing heavy. ``load_bundle`` fills ``details`` with the parameter count and FLOPs (:mod:`.cost`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from costbench.core.plugins import PluginGroup
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo.base import SOURCE_HF, SOURCE_ONNX, SOURCE_TFLITE, SOURCE_TORCH, ModelBundle, ZooModel
from costbench.harness.build.zoo.flops import cached_model_flops

MODELS = PluginGroup("costbench.models", "COSTBENCH_EXTRA_MODELS", "zoo model")


def zoo_names() -> list[str]:
    """Names of every zoo model (nothing is imported)."""
    return MODELS.names()


def zoo_model(name: str) -> ZooModel:
    """The zoo model called ``name``; KeyError listing the known names."""
    cls = MODELS.load(name, ZooModel)
    if cls.name != name:
        raise TypeError(f"{MODELS.target(name)} is registered as zoo model {name!r} but names itself {cls.name!r}")
    return cls()


def _zoo_kind(spec: ModelSpec) -> str:
    return zoo_model(spec.id).source_kind


_SOURCE_KINDS: dict[str, Callable[[ModelSpec], str]] = {
    "zoo": _zoo_kind,
    "onnx": lambda spec: SOURCE_ONNX,
    "torch": lambda spec: SOURCE_TORCH,
    "tflite": lambda spec: SOURCE_TFLITE,
    "hf": lambda spec: SOURCE_HF,
}


def source_kind(spec: ModelSpec) -> str:
    """SOURCE_TORCH, SOURCE_ONNX, SOURCE_TFLITE or SOURCE_HF for a spec, without loading the model (planning needs it)."""
    return _SOURCE_KINDS[spec.source](spec)


def _load_zoo(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    bundle = zoo_model(spec.id).load(cache_dir)
    bundle.name = spec.id
    if spec.data is not None:
        # The suite's own samples replace the zoo's, split and checked like a custom model's.
        from costbench.harness.build.zoo.custom import npz_sample_sets

        bundle.calibration, bundle.evaluation, data_details = npz_sample_sets(spec.id, Path(spec.data), bundle.inputs)
        bundle.details.update(data_details)
    return bundle


def _load_onnx(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    from costbench.harness.build.zoo.custom import load_onnx_model

    return load_onnx_model(spec, cache_dir)


def _load_torch(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    from costbench.harness.build.zoo.custom import load_torch_model

    return load_torch_model(spec, cache_dir)


def _load_tflite(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    from costbench.harness.build.zoo.custom import load_tflite_model

    return load_tflite_model(spec, cache_dir)


def _load_hf(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    from costbench.harness.build.zoo.causal_lm import check_folder, folder_hash, hf_bundle

    assert spec.path is not None  # the schema requires it
    check_folder(spec.id, spec.path)  # before hashing: a folder without weights must be named, not hashed
    return hf_bundle(spec.id, spec.path, folder_hash(spec.path, cache_dir),
                     {"hf_path": str(spec.path), "weights": "the user's own (source = 'hf')"})


_LOADERS: dict[str, Callable[[ModelSpec, Path], ModelBundle]] = {
    "zoo": _load_zoo,
    "onnx": _load_onnx,
    "torch": _load_torch,
    "tflite": _load_tflite,
    "hf": _load_hf,
}


def load_bundle(spec: ModelSpec, cache_dir: Path) -> ModelBundle:
    """Load the model a spec names, cap its sample sets, and record parameters, FLOPs and data in ``details``."""
    bundle = _LOADERS[spec.source](spec, Path(cache_dir))
    if spec.calibration_samples is not None:
        bundle.calibration = bundle.calibration.take(spec.calibration_samples)
    if spec.eval_samples is not None:
        bundle.evaluation = bundle.evaluation.take(spec.eval_samples)
    if spec.perplexity_text is not None:
        _attach_perplexity_text(bundle, spec)
    if not {"parameters", "flops"} <= bundle.details.keys():  # a zoo model may bring its own (cached) count
        bundle.details.update(cached_model_flops(bundle, Path(cache_dir)))
    bundle.details["data"] = {
        "calibration": {"samples": len(bundle.calibration), "description": bundle.calibration.description},
        "evaluation": {"samples": len(bundle.evaluation), "description": bundle.evaluation.description,
                       "labels": bundle.evaluation.labels is not None},
    }
    return bundle


def _attach_perplexity_text(bundle: ModelBundle, spec: ModelSpec) -> None:
    """The spec's perplexity text, tokenized by the model's tokenizer; on random weights only the reason it is not."""
    from costbench.harness.build.perplexity import KEY, check_text, tokenize_text

    assert spec.perplexity_text is not None
    if bundle.source_kind != SOURCE_HF or bundle.hf_path is None:
        raise ValueError(f"model {spec.id!r}: {KEY} applies to causal LMs only; this model is {bundle.task!r}")
    check_text(spec.id, Path(spec.perplexity_text))  # a missing file is named even where it would not be scored
    weights = str(bundle.details.get("weights", ""))
    if weights.startswith("random weights"):
        # A random model's perplexity is that of noise: a number that would read as quality and is not.
        bundle.details["perplexity"] = {"skipped": f"not computed: the model's weights are random ({weights}); "
                                                   "perplexity needs a model with real weights (source = 'hf')"}
        return
    bundle.perplexity_text = tokenize_text(spec.id, bundle.hf_path, Path(spec.perplexity_text), spec.perplexity_tokens)
    bundle.details["perplexity"] = {"text": bundle.perplexity_text.source, "tokens_scored": bundle.perplexity_text.scored,
                                    "window": bundle.perplexity_text.window}
