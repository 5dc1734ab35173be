"""Tiny real artifacts (torch module, ONNX, OpenVINO IR) built once per session from one fixed-seed model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH, Artifact, InputSpec

INPUT_SHAPE = (3, 16, 16)


@dataclass
class TinyModel:
    """The eager reference module and the same weights as an artifact in every format."""

    module: object
    artifacts: dict[str, Artifact]
    input_shape: tuple[int, ...] = INPUT_SHAPE


def _artifact(fmt: str, path: Path) -> Artifact:
    return Artifact(format=fmt, path=path, key="test", inputs=[InputSpec("input", INPUT_SHAPE)], outputs=["logits"])


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModel:
    """A Conv/ReLU/Flatten/Linear model saved as FORMAT_TORCH, exported to ONNX and converted to IR."""
    import openvino as ov
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    ).eval()
    root = tmp_path_factory.mktemp("tiny")

    pt = root / "model.pt"
    torch.save(module, pt)

    onnx_path = root / "model.onnx"
    x = torch.randn(2, *INPUT_SHAPE)
    torch.onnx.export(
        module, (x,), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )

    ir_dir = root / "ir"
    ir_dir.mkdir()
    ov.save_model(ov.convert_model(str(onnx_path)), str(ir_dir / "model.xml"), compress_to_fp16=False)

    return TinyModel(
        module=module,
        artifacts={
            FORMAT_TORCH: _artifact(FORMAT_TORCH, pt),
            FORMAT_ONNX: _artifact(FORMAT_ONNX, onnx_path),
            FORMAT_OPENVINO: _artifact(FORMAT_OPENVINO, ir_dir / "model.xml"),
        },
    )
