"""Artifacts: the files a recipe emits and a backend loads, cached by the hash of what built them.

A recipe knows only the format it emits; a backend only the formats it accepts. The cache key
is a SHA-256 over the source model's content hash, the recipe's name, version and config, and
the format, so a changed weight, option or recipe version never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

FORMAT_TORCH = "torch-module"  # a pickled torch.nn.Module (torch.save), loaded with weights_only=False
FORMAT_ONNX = "onnx"  # an ONNX model file
FORMAT_OPENVINO = "openvino-ir"  # OpenVINO IR: model.xml + model.bin
FORMAT_EXECUTORCH = "executorch-pte"  # an ExecuTorch program (.pte), lowered to XNNPACK
FORMAT_TFLITE = "tflite"  # a LiteRT (TensorFlow Lite) flatbuffer model (.tflite)
# A Hugging Face causal-LM folder (config.json, weights, tokenizer.json); the artifact's path is its config.json.
# A weight-only quantized variant has no safetensors: torchao's quantized state dict instead, and what made it.
FORMAT_HF_CAUSAL_LM = "hf-causal-lm"
HF_TORCHAO_WEIGHTS = "torchao-weights.pt"  # torch.save of the state dict (torchao tensor subclasses)
HF_TORCHAO_RECIPE = "torchao-quantization.json"  # the method, bits, granularity and versions that wrote it
# An OpenVINO GenAI folder (stateful openvino_model.xml/.bin, openvino_tokenizer.xml, openvino_detokenizer.xml,
# config files) as openvino_genai.LLMPipeline loads it; the artifact's path is its openvino_model.xml.
FORMAT_OPENVINO_LLM = "openvino-llm"
# ONNX Runtime GenAI's model builder output: genai_config.json, model.onnx (+ model.onnx.data), tokenizer files;
# the artifact's path is its genai_config.json.
FORMAT_ORT_GENAI = "onnxruntime-genai"
# One GGUF file (llama.cpp's format: architecture, tokenizer and tensors in one file), F32 or quantized by llama.cpp
# itself; the artifact's path is its model.gguf.
FORMAT_GGUF = "gguf"

_MANIFEST = "artifact.json"


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, its per-sample shape (the batch dimension is added in front), its dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def batched(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, *self.shape)


@dataclass
class Artifact:
    """A built model file in one format, with what built it."""

    format: str
    path: Path  # the file a backend loads (model.onnx, model.xml, model.pt)
    key: str  # content hash of everything that built it
    inputs: list[InputSpec]
    outputs: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    build_time_s: float | None = None  # None when it came from the cache
    cached: bool = False

    @property
    def directory(self) -> Path:
        return self.path.parent


def default_cache_dir() -> Path:
    """``$COSTBENCH_CACHE_DIR``, else ``~/.cache/costbench``."""
    env = os.environ.get("COSTBENCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "costbench"


def content_key(material: dict[str, Any]) -> str:
    """Stable SHA-256 (hex, 24 chars) of JSON-serialisable build inputs."""
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to a temp file beside ``path``, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def directory_size(path: Path) -> int:
    """Bytes on disk of the model files in an artifact directory (the manifest excluded)."""
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name != _MANIFEST)


class ArtifactCache:
    """A folder of artifacts keyed by content hash; builds are atomic (temp dir, then rename)."""

    def __init__(self, root: Path | None = None):
        self.root = (root or default_cache_dir()) / "artifacts"

    def contains(self, key: str) -> bool:
        """Whether a finished artifact with this content key is in the cache."""
        return bool(key) and (self.root / key / _MANIFEST).exists()

    def lookup(self, material: dict[str, Any], filename: str, fmt: str, inputs: list[InputSpec],
               outputs: list[str]) -> Artifact | None:
        """The cached artifact for ``material`` (``cached`` True, ``build_time_s`` None), or None if not built."""
        key = content_key({**material, "format": fmt})
        final = self.root / key
        manifest = final / _MANIFEST
        if not manifest.exists():
            return None
        meta = json.loads(manifest.read_text())
        return Artifact(
            format=fmt,
            path=final / filename,
            key=key,
            inputs=inputs,
            outputs=meta.get("outputs", outputs),
            provenance=meta["provenance"],
            size_bytes=meta["size_bytes"],
            build_time_s=None,
            cached=True,
        )

    def get_or_build(
        self,
        material: dict[str, Any],
        filename: str,
        fmt: str,
        inputs: list[InputSpec],
        outputs: list[str],
        build: Callable[[Path], dict[str, Any]],
    ) -> Artifact:
        """Return the cached artifact for ``material``, or call ``build(tmpdir)`` to make it.

        ``build`` writes ``filename`` (and any companion files) into the directory it is given
        and returns the provenance to record. A crashed build leaves only a temp dir behind.
        """
        hit = self.lookup(material, filename, fmt, inputs, outputs)
        if hit is not None:
            return hit
        key = content_key({**material, "format": fmt})
        final = self.root / key
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            t0 = time.perf_counter()
            provenance = build(tmp)
            build_time = time.perf_counter() - t0
            if not (tmp / filename).exists():
                raise RuntimeError(f"recipe build did not write {filename} into {tmp}")
            size = directory_size(tmp)
            (tmp / _MANIFEST).write_text(
                json.dumps(
                    {"format": fmt, "key": key, "material": material, "provenance": provenance,
                     "outputs": outputs, "size_bytes": size, "build_time_s": build_time},
                    indent=2, default=str,
                )
            )
            try:
                os.rename(tmp, final)
            except OSError:
                # Another process finished the same build first; theirs is equivalent.
                shutil.rmtree(tmp, ignore_errors=True)
                return self.get_or_build(material, filename, fmt, inputs, outputs, build)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(fmt, final / filename, key, inputs, outputs, provenance, size, build_time, False)


def artifact_summary(artifact: Artifact) -> dict[str, Any]:
    """JSON-friendly description for result rows."""
    d = asdict(artifact)
    d["path"] = str(artifact.path)
    d["inputs"] = [asdict(i) for i in artifact.inputs]
    return d
