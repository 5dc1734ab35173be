"""env_id sees NVIDIA's wheels under the names CUDA 13 and TensorRT 10/11 ship them as, not only the old ones."""

from __future__ import annotations

from importlib import metadata

import pytest

from costbench.harness.machine import env


class _Dist:
    """What library_versions reads of an installed distribution: its Name and version."""

    def __init__(self, name: str, version: str):
        self.metadata = {"Name": name}
        self.version = version


@pytest.fixture
def installed(monkeypatch):
    """Replace the installed distributions with a list the test chooses."""

    def install(*pairs: tuple[str, str]) -> None:
        dists = [_Dist(n, v) for n, v in pairs]
        by_name = {env._normalized(n): v for n, v in pairs}

        def version(name: str) -> str:
            try:
                return by_name[env._normalized(name)]
            except KeyError:
                raise metadata.PackageNotFoundError(name) from None

        monkeypatch.setattr(env.metadata, "distributions", lambda: iter(dists))
        monkeypatch.setattr(env.metadata, "version", version)

    return install


CUDA13_TRT11 = [("torch", "2.13.0"), ("tensorrt", "11.4.0.106"), ("tensorrt_cu13", "11.4.0.106"),
                ("tensorrt_cu13_libs", "11.4.0.106"), ("tensorrt_cu13_bindings", "11.4.0.106"),
                ("nvidia-cuda-runtime", "13.5.37"), ("nvidia-cublas", "13.10.0.20"), ("nvidia-cudnn-cu13", "9.27.0.42"),
                ("cupy-cuda13x", "14.2.0"), ("numpy", "2.3.0")]
CUDA12_TRT10 = [("torch", "2.13.0"), ("tensorrt", "10.13.0.35"), ("tensorrt-cu12", "10.13.0.35"),
                ("tensorrt-cu12-libs", "10.13.0.35"), ("nvidia-cuda-runtime-cu12", "12.9.79"),
                ("nvidia-cublas-cu12", "12.9.3.13"), ("cupy-cuda12x", "14.2.0"), ("numpy", "2.3.0")]


def test_cuda13_and_tensorrt11_wheel_names_are_in_the_key(installed):
    installed(*CUDA13_TRT11)
    libs = env.library_versions()
    assert libs["tensorrt"] == "11.4.0.106"
    assert libs["tensorrt-cu13"] == libs["tensorrt-cu13-libs"] == libs["tensorrt-cu13-bindings"] == "11.4.0.106"
    assert libs["nvidia-cuda-runtime"] == "13.5.37"  # CUDA 13: no -cuXX suffix
    assert libs["nvidia-cublas"] == "13.10.0.20" and libs["nvidia-cudnn-cu13"] == "9.27.0.42"
    assert libs["cupy-cuda13x"] == "14.2.0"
    assert libs["nvidia-cuda-runtime-cu12"] == "not installed"  # the fixed names stay, installed or not
    assert "numpy" in libs and "scikit-learn" in libs


def test_cuda12_and_cuda13_machines_get_different_env_ids(installed, monkeypatch):
    monkeypatch.setattr(env, "gpus", lambda: [{"name": "NVIDIA H200", "memory": "143771 MiB", "driver": "580.1"}])
    installed(*CUDA13_TRT11)
    libs13, id13 = env.library_versions(), env.fingerprint()["env_id"]
    installed(*CUDA12_TRT10)
    libs12, id12 = env.library_versions(), env.fingerprint()["env_id"]
    assert libs12["tensorrt-cu12"] == "10.13.0.35" and libs12["nvidia-cuda-runtime-cu12"] == "12.9.79"
    assert "tensorrt-cu13" not in libs12 and "nvidia-cuda-runtime" not in libs12
    assert id12 != id13
    # Only the TensorRT wheel differs (same metapackage version): still a different env_id.
    changed = [(n, "11.4.0.107" if n == "tensorrt_cu13_libs" else v) for n, v in CUDA13_TRT11]
    installed(*changed)
    assert env.fingerprint()["env_id"] != id13


def test_a_machine_without_nvidia_wheels_keeps_its_key(installed):
    installed(("torch", "2.13.0"), ("numpy", "2.3.0"), ("nvidia-ml-py", "13.580.82"), ("tensorrt-llm", "1.0"))
    libs = env.library_versions()
    assert set(libs) == set(env.LIBRARIES)  # unrelated nvidia-* and tensorrt-* packages are not in the families
