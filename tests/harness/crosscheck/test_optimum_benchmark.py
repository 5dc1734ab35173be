"""costbench crosscheck against optimum-benchmark: generate cases, TTFT vs prefill and TPOT vs decode per token.

A real costbench run (``costbench.api.run``: tiny-llama, fp32 and int8 weight-only, a small generate scenario)
is resolved as `costbench crosscheck RUN` resolves it, and optimum-benchmark's PyTorch backend really measures
the fp32 folder with the same settings. The tests check that both tools' numbers and the breakdown come back,
that the ratios and verdicts are computed from the two numbers, that optimum-benchmark's per-token list is laid
out as the rebuilding assumes, and the skip reasons (a quantized folder, the package missing). No timed asserts.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import costbench.api as api
from costbench.harness.crosscheck import optimum_benchmark as ob
from costbench.harness.crosscheck.vendor import AGREE_WITHIN
from costbench.harness.reports.data import list_all_runs, load_selection, resolve_runs

PROMPT, NEW, REQUESTS = 16, 6, 3
SUITE = {"name": "ob-crosscheck", "models": ["tiny-llama"], "variants": ["fp32", "int8-weight-only"],
         "backends": [{"name": "transformers", "threads": 1}],
         "scenarios": [{"kind": "generate", "prompt_tokens": PROMPT, "output_tokens": NEW, "warmup_count": 1,
                        "min_count": REQUESTS}],
         "processes": 1, "remeasure_contended": False, "accuracy": False}
needs_tool = pytest.mark.skipif(ob.probe() is not None, reason=str(ob.probe()))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """tiny-llama measured by costbench the normal way: a suite through costbench.api.run."""
    results = tmp_path_factory.mktemp("ob-results")
    out = api.run(SUITE, results)
    assert out.counts == {"ok": 2, "skipped": 0, "failed": 0}
    return out


@pytest.fixture(scope="module")
def targets(run):
    """The run's generate cases, resolved as `costbench crosscheck RUN_ID` does."""
    dirs = [run.results_dir]
    runs = list_all_runs(dirs)
    ids = resolve_runs([run.run_id], runs)
    found, skipped = ob.targets_from_selection(load_selection(dirs, ids, runs), ids)
    assert skipped == []
    return {t.target.variant: t for t in found}


@pytest.fixture(scope="module")
def pair(targets, tmp_path_factory):
    """optimum-benchmark's real run on the fp32 folder costbench measured (exactly REQUESTS requests)."""
    if ob.probe():
        pytest.skip(ob.probe())
    return ob.crosscheck_target(targets["fp32"], tmp_path_factory.mktemp("ob-work"), time_s=0)


def test_the_run_gives_what_the_crosscheck_needs(targets):
    assert set(targets) == {"fp32", "int8-weight-only"}
    gt = targets["fp32"]
    assert gt.ttft_ms > 0 and gt.tpot_ms > 0 and gt.inter_token_ms > 0 and gt.request_latency_ms > 0
    assert (gt.prompt_tokens, gt.output_tokens, gt.min_count, gt.warmup_count) == (PROMPT, NEW, REQUESTS, 1)
    assert gt.target.backend_options["threads"] == 1
    assert (gt.folder / "config.json").exists() and (gt.folder / "model.safetensors").exists()


@needs_tool
def test_optimum_benchmark_measures_the_same_folder_with_the_same_settings(pair, targets):
    assert pair.status == "ok", pair.reason
    backend, scenario = pair.settings["backend"], pair.settings["scenario"]
    assert backend["model"] == str(targets["fp32"].folder) and backend["no_weights"] is False
    assert (backend["device"], backend["torch_dtype"], backend["cache_implementation"]) == ("cpu", "float32", "static")
    assert backend["inter_op_num_threads"] == 1  # torch.set_num_threads in optimum-benchmark 0.6.0
    assert scenario["input_shapes"] == {"batch_size": 1, "sequence_length": PROMPT}
    assert scenario["generate_kwargs"] == {"max_new_tokens": NEW, "min_new_tokens": NEW, "do_sample": False,
                                           "num_beams": 1}
    assert pair.ob.threads == 1 and pair.mismatches == []
    assert pair.ob.version == ob.TESTED_VERSION and pair.notes == []
    assert pair.ob.requests == REQUESTS  # duration 0: exactly the case's min_count requests


@needs_tool
def test_both_tools_numbers_come_back_with_the_breakdown(pair):
    o = pair.ob
    for v in (o.prefill_ms, o.decode_ms, o.decode_per_token_ms, o.generate_ms, o.per_token_reported_p50_ms,
              o.step_gap_p50_ms, o.request_mean_gap_p50_ms):
        assert v > 0
    assert o.decode_tail_p50_ms >= 0 and o.cross_request_gap_p50_ms > 0
    rows = pair.breakdown()
    assert [r["quantity"] for r in rows][:2] == ["time to first token", "time per output token"]
    for r in rows:
        assert r["costbench"] and r["optimum_benchmark"] and r["optimum_benchmark_ms"] is not None
    assert rows[0]["costbench_ms"] == pair.gt.ttft_ms and rows[0]["optimum_benchmark_ms"] == o.prefill_ms
    assert rows[1]["costbench_ms"] == pair.gt.tpot_ms and rows[1]["optimum_benchmark_ms"] == o.decode_per_token_ms
    d = json.loads(json.dumps(pair.to_dict()))
    assert d["costbench"]["ttft_p50_ms"] == pair.gt.ttft_ms and d["optimum_benchmark"]["prefill_ms"] == o.prefill_ms
    assert len(d["breakdown"]) == len(rows)
    page = ob.to_markdown([pair])
    assert "| time to first token |" in page and "HF_HUB_OFFLINE=1" in page


@needs_tool
def test_ratios_and_verdicts_are_computed_from_the_two_numbers(pair):
    o, gt, n = pair.ob, pair.gt, NEW
    report = o.report
    assert o.prefill_ms == pytest.approx(report["prefill"]["latency"]["p50"] * 1e3)
    assert o.decode_per_token_ms == pytest.approx(report["decode"]["latency"]["p50"] * 1e3 / (n - 1))
    assert pair.ttft_ratio == pytest.approx(gt.ttft_ms / o.prefill_ms)
    assert pair.tpot_ratio == pytest.approx(gt.tpot_ms / o.decode_per_token_ms)
    assert pair.step_ratio == pytest.approx(gt.tpot_ms / o.request_mean_gap_p50_ms)
    # the verdict moves with the numbers: within AGREE_WITHIN of optimum-benchmark's, and either side of it
    def with_costbench(ttft: float, tpot: float) -> ob.GenerativePair:
        return dataclasses.replace(pair, gt=dataclasses.replace(gt, ttft_ms=ttft, tpot_ms=tpot))

    inside, outside = 1 + AGREE_WITHIN * 0.8, 1 + AGREE_WITHIN * 1.2
    assert with_costbench(o.prefill_ms * inside, o.decode_per_token_ms / inside).verdict == "agrees"
    assert with_costbench(o.prefill_ms * outside, o.decode_per_token_ms).verdict == \
        "TTFT: costbench slower; TPOT: agrees"
    assert with_costbench(o.prefill_ms, o.decode_per_token_ms / outside).verdict == \
        "TTFT: agrees; TPOT: costbench faster"


@needs_tool
def test_the_per_token_list_is_laid_out_as_the_rebuilding_assumes(pair):
    """Each request appends every gap of the session so far: block k is the first k*n - 1 gaps of the last one; and
    a request's generate = its prefill + its decode (the same stamps), its decode = its gaps + the end of generate."""
    lat = pair.ob.report
    values = lat["per_token"]["latency"]["values"]
    k = pair.ob.requests
    last = values[-(k * NEW - 1):]
    start = 0
    for j in range(1, k + 1):
        block = values[start:start + j * NEW - 1]
        assert block == last[:j * NEW - 1]
        start += j * NEW - 1
    assert start == len(values)
    gaps = ob.per_request_gaps(values, k, NEW)
    assert [len(g) for g in gaps] == [NEW - 1] * k
    for pre, dec, gen, g in zip(lat["prefill"]["latency"]["values"], lat["decode"]["latency"]["values"],
                                lat["generate"]["latency"]["values"], gaps):
        assert gen == pytest.approx(pre + dec, rel=1e-9)
        assert dec >= sum(g)
    with pytest.raises(ValueError, match="layout has changed"):
        ob.per_request_gaps(values[1:], k, NEW)


def test_a_quantized_folder_is_skipped_with_the_reason(targets, tmp_path):
    p = ob.crosscheck_target(targets["int8-weight-only"], tmp_path)
    if ob.probe():
        assert (p.status, p.reason) == ("skipped", ob.probe())
    else:
        assert p.status == "skipped" and "torchao-weights.pt" in p.reason and "from_pretrained" in p.reason


@needs_tool
def test_the_command_cross_checks_a_run(run, tmp_path):
    from costbench.commands.cli import app

    out = tmp_path / "cc.json"
    res = CliRunner().invoke(app, ["crosscheck", run.run_id, "-r", str(run.results_dir), "--tool",
                                   "optimum-benchmark", "--time", "0", "--breakdown", "--breakdown-rounds", "2",
                                   "--json", str(out), "--md", str(tmp_path / "cc.md")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["pairs"] == []
    got = {p["variant"]: p for p in data["generative_pairs"]}
    assert got["fp32"]["status"] == "ok" and got["fp32"]["ratios"]["ttft_over_prefill"] > 0
    assert got["int8-weight-only"]["status"] == "skipped"
    # both tools on one loaded model, alternated: 2 rounds, one request per tool each
    inter = got["fp32"]["interleaved"]
    assert inter["rounds"] == 2 and inter["requests_per_side"] == 2 and inter["threads"] == 1
    assert [r["what"].split(":")[0] for r in inter["rows"]] == ["time to first token", "time per output token",
                                                                "step gaps, the request's mean", "request"]
    for r in inter["rows"]:
        assert r["costbench_ms"] > 0 and r["optimum_benchmark_ms"] > 0
        assert r["ratio"] == pytest.approx(r["costbench_ms"] / r["optimum_benchmark_ms"])
    assert "## costbench vs optimum-benchmark (generate)" in (tmp_path / "cc.md").read_text()
    bad = CliRunner().invoke(app, ["crosscheck", run.run_id, "-r", str(run.results_dir), "--tool", "benchmark"])
    assert bad.exit_code != 0 and "not a cross-check tool" in bad.output


def test_without_optimum_benchmark_the_case_is_skipped_with_the_exact_reason(targets, tmp_path):
    """The package made unimportable in a fresh interpreter (``sys.modules[name] = None``, Python's own way of
    refusing an import), the rest of the environment as it is."""
    record = tmp_path / "target.json"
    gt = targets["fp32"]
    record.write_text(json.dumps({"spec": gt.target.case, "info": {"artifact": gt.target.artifact,
                                                                    "session": gt.target.session},
                                  "metrics": [{"metric": "ttft_p50", "value": gt.ttft_ms},
                                              {"metric": "tpot_p50", "value": gt.tpot_ms}]}))
    script = f"""
import json, sys
from pathlib import Path
sys.modules["optimum_benchmark"] = None
from costbench.harness.crosscheck import optimum_benchmark as ob
r = json.loads(Path({str(record)!r}).read_text())
gt = ob.generative_target(r["spec"], r["info"], r["metrics"], "run")
(p,) = ob.crosscheck([gt], Path({str(tmp_path)!r}))
print(json.dumps({{"probe": ob.probe(), "status": p.status, "reason": p.reason}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    reason = ("optimum-benchmark is not installed (import of optimum_benchmark halted; None in sys.modules): "
              "pip install -c constraints/cpu.txt 'costbench[crosscheck]' (optimum-benchmark==0.6.0)")
    assert got == {"probe": reason, "status": "skipped", "reason": reason}
