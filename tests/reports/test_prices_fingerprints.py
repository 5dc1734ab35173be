"""Recorded fingerprints of three machine classes get a priced machine type, and a report on a run recorded on
each shows a cost per million inferences (issue 25). The fingerprints are in data/fingerprints/ (README there)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.harness.reports.prices import BY_GPU_SHARE, BY_ISA, infer_machine, load_prices
from synth_runs import case, write_run

FINGERPRINTS = Path(__file__).parent / "data" / "fingerprints"


def fingerprint(name):
    return json.loads((FINGERPRINTS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def table():
    return load_prices()


# name, expected type, its hourly price (USD), how sure, words the evidence must have
EXPECTED = [
    ("amd-epyc-vnni-2vcpu", "aws/c7a.large", 0.10264, BY_ISA, "Zen 4"),
    ("amd-epyc-avx2-2vcpu", "aws/c6a.large", 0.0765, BY_ISA, "Zen 1-3"),
    ("intel-xeon-amx-2vcpu", "aws/c7i.large", 0.08925, BY_ISA, "Sapphire/Emerald/Granite Rapids"),
    ("intel-xeon-amx-16vcpu-h200", "aws/p5en.48xlarge ×1/8", 63.3 / 8, BY_GPU_SHARE, "1× NVIDIA H200"),
]


@pytest.mark.parametrize("name, machine, hourly, confidence, words", EXPECTED)
def test_each_recorded_machine_class_gets_a_priced_type(table, name, machine, hourly, confidence, words):
    fp = fingerprint(name)
    g = infer_machine(fp, table)
    assert g.machine is not None, g.evidence
    assert (g.machine.name, g.machine.hourly, g.confidence) == (machine, pytest.approx(hourly), confidence)
    assert words in g.evidence
    text = g.describe(fp["env_id"])
    assert f"inferred as {machine} ({g.machine.hourly:g} USD/h" in text and f"with confidence '{confidence}'" in text
    assert f"--machine-type {fp['env_id'][:12]}=TYPE" in text


def test_zen4_alternatives_span_the_clouds_that_sell_it(table):
    """The VM says only "AMD EPYC": the type rests on the ISA generation, and the page lists what else has it."""
    g = infer_machine(fingerprint("amd-epyc-vnni-2vcpu"), table)
    assert {"aws/m7a.large", "aws/r7a.large", "azure/Standard_D2as_v6", "azure/Standard_F2as_v6"} <= set(g.alternatives)
    assert all(m.vcpus == 2 and m.cpu_vendor == "AMD" for m in g.options)
    lo, hi = g.price_range()
    assert lo < g.machine.hourly < hi  # an approximate Azure price is lower; a firm price is preferred
    assert "across aws, azure" in g.describe("decd23d37ceb")
    # 23.5 GiB matches no 2-vCPU Zen 4 type's memory: the page says the price is for the CPUs.
    assert "23.5 GiB of memory and the type 4 GiB" in g.evidence


def test_the_h200_host_is_priced_as_one_gpu_of_eight_and_says_so(table):
    g = infer_machine(fingerprint("intel-xeon-amx-16vcpu-h200"), table)
    assert "No type in the table has 1 of these GPUs; priced as 1/8 of aws/p5en.48xlarge" in g.size_note
    assert g.machine.approximate and "approximate" in g.describe("f8dac752695e")
    # The Intel host rules out the AMD-hosted H200 types; the Intel-hosted ones are the alternatives.
    assert set(g.alternatives) == {"gcp/a3-ultragpu-8g ×1/8", "azure/Standard_ND96isr_H200_v5 ×1/8"}


def config(median_ms, throughput):
    return [case(scenario="single_stream", median_ms=median_ms, seed=1),
            case(scenario="offline", median_ms=median_ms, throughput=throughput, seed=2)]


@pytest.mark.parametrize("name, machine, hourly, confidence, words", EXPECTED)
def test_report_last_shows_a_cost_per_million_inferences(tmp_path, name, machine, hourly, confidence, words):
    """`costbench report last` after a run recorded on each machine class: the pick has a cost, from the inferred
    type."""
    fp = fingerprint(name)
    write_run(tmp_path / "results", "20261204-000000-smoke1", config(2.0, 500.0), env=fp)
    r = CliRunner().invoke(app, ["report", "last", "--results", str(tmp_path / "results"), "-o", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    cost = hourly / (3600 * 500.0) * 1e6
    assert f"inferred as {machine}" in r.output
    assert f"{cost:.4g} USD per million inferences" in r.output and "No price for env" not in r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"{machine} (inferred) at {hourly:g} USD/h" in md
    row = pd.read_csv(tmp_path / "rep" / "report.csv").iloc[0]
    assert row.machine == machine and row.cost_per_m == pytest.approx(cost)  # hourly / (3600 s × 500/s) × 1e6
