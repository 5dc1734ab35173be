"""Real photographs for ImageNet models: deterministic 224x224 crops of the photos that ship with packages.

scikit-learn ships two colour photos (``china.jpg``, ``flower.jpg``); scikit-image (a dependency)
adds the photographs it bundles in its wheel: five in colour (astronaut, coffee cup, cat, rocket,
motorcycle) and two grey ones used as RGB (cameraman, coins). They are read straight from its data
folder, so nothing is ever downloaded; a photo missing there is left out and the description says
which photos were used. Every photo is cut at several scales and positions, each crop is
resized to 224x224 and normalized with the ImageNet mean/std. Crops alternate between the
calibration and the evaluation set, so the two are disjoint and both cover every photo and scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from costbench.harness.build.zoo.base import SampleSet

IMAGE_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Crop side as a fraction of the photo's short side; 8 positions along each scale.
SCALES = (1.0, 0.8, 0.65, 0.5)
POSITIONS = 8
# scikit-image's bundled photographs (only files already on disk are used; its fetchable data never is).
# Its other bundled images are test patterns, textures, microscopy or astronomy, not ImageNet-like scenes.
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "camera.png", "coins.png")


@dataclass(frozen=True)
class Crop:
    """One square crop of a photo: the photo's file name and the box in its pixels."""

    image: str
    left: int
    top: int
    side: int

    def box(self) -> tuple[int, int, int, int]:
        """PIL crop box (left, upper, right, lower)."""
        return (self.left, self.top, self.left + self.side, self.top + self.side)


@dataclass
class ImageSamples:
    """Calibration and evaluation sets of crops, with the crops each sample came from."""

    calibration: SampleSet
    evaluation: SampleSet
    calibration_crops: list[Crop]
    evaluation_crops: list[Crop]


@functools.lru_cache(maxsize=1)
def photos() -> dict[str, np.ndarray]:
    """All available photos as HxWx3 uint8 arrays keyed by file name, in a fixed order."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    out = {Path(f).name: np.asarray(img) for f, img in zip(data.filenames, data.images)}
    out.update(_skimage_photos())
    return out


def skimage_data_folder() -> Path | None:
    """scikit-image's bundled data folder, found without importing it (planning and cache keys stay cheap)."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def available_skimage_photos() -> list[str]:
    """The names in ``SKIMAGE_PHOTOS`` present on disk, in that order."""
    folder = skimage_data_folder()
    return [name for name in SKIMAGE_PHOTOS if folder is not None and (folder / name).is_file()]


def _skimage_photos() -> dict[str, np.ndarray]:
    """scikit-image's photos as RGB (grey ones replicated); read from its data folder so nothing downloads."""
    from PIL import Image

    folder = skimage_data_folder()
    out = {}
    for name in available_skimage_photos():
        with Image.open(folder / name) as img:
            out[name] = np.asarray(img.convert("RGB"))
    return out


def crops_of(name: str, height: int, width: int) -> list[Crop]:
    """The distinct crops of one photo: every scale at ``POSITIONS`` positions spread across it."""
    crops: dict[Crop, None] = {}  # an ordered set: a square photo at full scale yields one box, not eight
    short = min(height, width)
    for scale in SCALES:
        side = max(1, round(short * scale))
        for i in range(POSITIONS):
            fx = i / (POSITIONS - 1)
            fy = (i % 3) / 2  # top, middle, bottom in turn, so crops also move vertically
            crops[Crop(name, round(fx * (width - side)), round(fy * (height - side)), side)] = None
    return list(crops)


def all_crops() -> list[Crop]:
    """Every crop of every available photo, photo by photo."""
    return [c for name, img in photos().items() for c in crops_of(name, img.shape[0], img.shape[1])]


def render(crops: list[Crop], size: int = IMAGE_SIZE) -> np.ndarray:
    """Cut, resize (bilinear, antialiased by PIL when shrinking) and normalize crops into NCHW float32."""
    from PIL import Image

    images = {name: Image.fromarray(arr) for name, arr in photos().items()}
    out = np.empty((len(crops), 3, size, size), dtype=np.float32)
    for i, crop in enumerate(crops):
        pixels = images[crop.image].crop(crop.box()).resize((size, size), Image.Resampling.BILINEAR)
        x = np.asarray(pixels, dtype=np.float32) / 255.0
        out[i] = ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return out


def imagenet_samples(input_name: str = "input") -> ImageSamples:
    """Disjoint calibration and evaluation crops (alternating), ImageNet-normalized NCHW float32."""
    crops = all_crops()
    calibration, evaluation = crops[0::2], crops[1::2]
    names = ", ".join(photos())
    what = (f"{IMAGE_SIZE}x{IMAGE_SIZE} crops of real photos ({names}) at {len(SCALES)} scales, "
            "ImageNet mean/std normalized")
    return ImageSamples(
        calibration=SampleSet({input_name: render(calibration)}, None, f"{what}; even-numbered crops"),
        evaluation=SampleSet({input_name: render(evaluation)}, None, f"{what}; odd-numbered crops"),
        calibration_crops=calibration,
        evaluation_crops=evaluation,
    )
