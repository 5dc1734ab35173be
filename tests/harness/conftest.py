"""Zoo and recipe fixtures: models loaded once per session, with a cache shared by the tests that reuse them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from costbench.core.artifacts import ArtifactCache
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo.registry import load_bundle

HERE = Path(__file__).parent
# The helpers beside this file (tiny_factory.py, queue_sim.py, pg_cluster.py, spinning_server.py) for the tests,
# which mirror harness/'s subpackages.
sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def shared_cache(shared_cache_dir) -> ArtifactCache:
    """The artifact cache inside ``shared_cache_dir``."""
    return ArtifactCache(shared_cache_dir)


@pytest.fixture(scope="session")
def digits(shared_cache_dir):
    """The digits-cnn bundle (trained once per session)."""
    return load_bundle(ModelSpec(id="digits-cnn"), shared_cache_dir)


@pytest.fixture(scope="session")
def effnet(shared_cache_dir):
    """The EfficientNet-Lite0 bundle."""
    return load_bundle(ModelSpec(id="efficientnet-lite0"), shared_cache_dir)


@pytest.fixture(scope="session")
def minilm(shared_cache_dir):
    """The all-MiniLM-L6-v2 bundle (sentence embeddings)."""
    return load_bundle(ModelSpec(id="all-minilm-l6-v2"), shared_cache_dir)


@pytest.fixture
def factory_path(monkeypatch):
    """Make tests/harness importable so 'tiny_factory:...' factories resolve."""
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def tiny_onnx(tmp_path, factory_path) -> Path:
    """The tiny factory model exported to ONNX with a dynamic batch axis."""
    import torch

    from tiny_factory import make_tiny

    path = tmp_path / "tiny.onnx"
    torch.onnx.export(make_tiny().eval(), (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL server for the team-store tests: initdb + pg_ctl on a Unix socket, stopped at the end.

    Skips only when no PostgreSQL server binaries are installed (.ci/run installs Debian's postgresql).
    """
    import sys

    sys.path.insert(0, str(HERE))
    from pg_cluster import server_bin, start_cluster

    if server_bin() is None:
        pytest.skip("no PostgreSQL server binaries (initdb/pg_ctl) on this machine: apt-get install -y postgresql "
                    "(.ci/run does)")
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    """(bundle, session): the tiny Llama in fp32 on the Transformers backend, one thread."""
    from costbench.backends.transformers_backend import TransformersBackend
    from costbench.core.artifacts import FORMAT_HF_CAUSAL_LM
    from costbench.harness.build.compress.registry import get_recipe
    from costbench.harness.build.zoo.registry import zoo_model

    cache = tmp_path_factory.mktemp("gen-scenario")
    bundle = zoo_model("tiny-llama").load(cache)
    artifact = get_recipe("fp32").artifact(bundle, get_recipe("fp32").parse_config({}), FORMAT_HF_CAUSAL_LM,
                                           ArtifactCache(cache))
    backend = TransformersBackend()
    session = backend.prepare(artifact, backend.parse_options({"threads": 1}), 1)
    yield bundle, session
    session.close()
