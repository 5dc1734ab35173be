"""The price table: shipped defaults, a user file laid over them, machine assignments, cost formulas."""

import pytest

from costbench.harness.reports.prices import (
    PriceError, cost_per_million, default_prices_text, energy_cost_per_million, load_prices, select_machines,
)


def test_defaults_cover_common_cpu_and_gpu_instances():
    t = load_prices()
    assert t.currency == "USD" and t.as_of
    assert {"aws/c7i.large", "aws/g5.xlarge", "gcp/g2-standard-4", "azure/Standard_NC4as_T4_v3"} <= set(t.machines)
    assert any(m.gpu for m in t.machines.values()) and any(not m.gpu for m in t.machines.values())
    assert all(m.hourly > 0 for m in t.machines.values())
    assert "[machines." in default_prices_text()


def test_user_file_overrides_adds_and_assigns(tmp_path):
    f = tmp_path / "prices.toml"
    f.write_text('currency = "EUR"\n[assign]\nabc123 = "onprem/box"\n"run-7" = "aws/c7i.large"\n'
                 '[machines."aws/c7i.large"]\nhourly = 0.5\n'
                 '[machines."onprem/box"]\nhourly = 0.2\nenergy_included = false\n')
    t = load_prices(f)
    assert t.currency == "EUR" and t.machines["aws/c7i.large"].hourly == 0.5
    assert t.machines["aws/g5.xlarge"].hourly > 0  # defaults kept
    assert t.machine_for("abc123def456", "run-1").name == "onprem/box"  # env prefix
    assert t.machine_for("abc123def456", "run-7").name == "aws/c7i.large"  # a run assignment wins
    assert t.machine_for("ffff", "run-1") is None


@pytest.mark.parametrize("text, message", [
    ('[machines."x/y"]\nhourly = -1\n', "hourly must be a price per hour"),
    ('[machines."x/y"]\nhourly = 1\ncores = 4\n', "unknown key(s) cores"),
    ('[assign]\nabc = "aws/c7i.lrage"\n', "did you mean aws/c7i.large"),
    ('price = 3\n', "unknown key(s) price"),
    ('[machines\n', "not valid TOML"),
])
def test_bad_price_files_name_file_key_and_fix(tmp_path, text, message):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(PriceError, match="p.toml") as exc:
        load_prices(f)
    assert message in str(exc.value)


def test_machine_type_option(tmp_path):
    runs = [("r1", "env-a"), ("r2", "env-b")]
    t = load_prices().with_assignments(["env-b=aws/g5.xlarge", "aws/c7i.large"], runs)
    assert t.machine_for("env-a", "r1").name == "aws/c7i.large"
    assert t.machine_for("env-b", "r2").name == "aws/g5.xlarge"
    with pytest.raises(PriceError, match="did you mean aws/c7i.large"):
        load_prices().with_assignments(["aws/c7i.larg"], runs)
    with pytest.raises(PriceError, match="neither an env_id nor a run id.*env-a, env-b"):
        load_prices().with_assignments(["nope=aws/c7i.large"], runs)


def test_cost_formulas():
    # $3.60 an hour at 1000 inferences/s: 3.6 / 3.6e6 * 1e6 = $1 per million.
    assert cost_per_million(3.6, 1000.0) == pytest.approx(1.0)
    assert cost_per_million(None, 1000.0) is None and cost_per_million(1.0, 0.0) is None
    # 360 W at 1000/s is 0.36 J each: 1e6 of them are 0.1 kWh, at 0.15/kWh 0.015.
    assert energy_cost_per_million(360.0, 1000.0, 0.15) == pytest.approx(0.015)


# --- Families, coverage and `costbench prices` (issue 25) ------------------------------------------------------

def test_a_family_expands_into_one_priced_row_per_size():
    t = load_prices()
    sizes = {m.name: m for m in t.machines.values() if m.family == "aws/m7a"}
    assert {"aws/m7a.medium", "aws/m7a.large", "aws/m7a.xlarge", "aws/m7a.2xlarge", "aws/m7a.48xlarge"} <= set(sizes)
    assert sizes["aws/m7a.large"].hourly == 0.11592 and sizes["aws/m7a.2xlarge"].hourly == pytest.approx(4 * 0.11592)
    assert sizes["aws/m7a.48xlarge"].vcpus == 192 and sizes["aws/m7a.48xlarge"].memory_gib == 768
    assert sizes["aws/m7a.large"].region == "us-east-1" and sizes["aws/m7a.large"].as_of
    assert t.machines["gcp/n2-standard-4"].hourly == pytest.approx(0.194236)  # {vcpus} names
    assert t.machines["azure/Standard_D4s_v5"].hourly == pytest.approx(0.192)
    # Prices the existing reports and tests rest on are unchanged.
    assert (t.machines["aws/c7i.large"].hourly, t.machines["aws/c6a.large"].hourly) == (0.08925, 0.0765)


def test_defaults_cover_every_common_family_at_2_vcpus_and_single_h100_and_h200():
    t = load_prices()
    two = {m.family for m in t.machines.values() if m.vcpus == 2 and not m.gpu}
    for family in ("aws/m7i", "aws/c7i", "aws/m7a", "aws/c7a", "aws/m7g", "aws/c7g", "aws/m8g", "aws/c8g", "aws/m6i",
                   "aws/c6i", "aws/m6a", "aws/c6a", "gcp/n2", "gcp/n2d", "gcp/n4", "gcp/c4", "gcp/t2d", "gcp/t2a",
                   "gcp/c4a", "gcp/e2", "azure/Dsv5", "azure/Dasv6", "azure/Dpsv5", "azure/Dsv6", "azure/Dpsv6",
                   "azure/Fasv6", "azure/Fsv2"):
        assert family in two, family
    assert {"gcp/c3-standard-4", "gcp/c3d-standard-4"} <= set(t.machines)  # no 2-vCPU size of these is sold
    gpus = {m.gpu for m in t.machines.values()}
    assert {"1x NVIDIA H100 80 GB", "1x NVIDIA H100 NVL 94 GB", "8x NVIDIA H200 141 GB", "1x NVIDIA L40S 48 GB",
            "1x NVIDIA T4 16 GB", "1x NVIDIA L4 24 GB", "1x NVIDIA A10G 24 GB", "1x NVIDIA A100 80 GB"} <= gpus
    for m in t.machines.values():  # every default row says where, when and from what page
        assert m.region and m.as_of and m.source.startswith("https://"), m.name


def test_a_user_family_is_merged_key_by_key_and_a_machine_row_wins(tmp_path):
    f = tmp_path / "prices.toml"
    f.write_text('[families."aws/m7a"]\nhourly = 0.2\n'
                 '[families."own/box"]\nname = "own/box-{vcpus}"\nvcpus = [8, 16]\nhourly = 1.6\nhourly_vcpus = 16\n'
                 '[machines."aws/m7a.xlarge"]\nhourly = 0.3\nvcpus = 4\n')
    t = load_prices(f)
    assert t.machines["aws/m7a.large"].hourly == 0.2 and t.machines["aws/m7a.2xlarge"].hourly == 0.8
    assert t.machines["aws/m7a.large"].cpu_models == ("EPYC 9R14",)  # the rest of the default family kept
    assert t.machines["aws/m7a.xlarge"].hourly == 0.3 and t.machines["aws/m7a.xlarge"].family == ""
    assert t.machines["own/box-8"].hourly == 0.8 and t.machines["own/box-16"].vcpus == 16


@pytest.mark.parametrize("text, message", [
    ('[families."x/f"]\nname = "x/f"\nvcpus = [2]\nhourly = 1\n', "families.'x/f'.name must name each size"),
    ('[families."x/f"]\nname = "x/f-{vcpus}"\nvcpus = 2\nhourly = 1\n', "families.'x/f'.vcpus must be a list"),
    ('[families."x/f"]\nname = "x/f-{vcpus}"\nvcpus = [2]\n', "families.'x/f'.hourly must be a price per hour"),
    ('[families."x/f"]\nname = "x/f.{aws_size}"\nvcpus = [6]\nhourly = 1\n', "AWS names no size with 6 vCPUs"),
    ('[families."x/f"]\nname = "x/f-{vcpus}"\nvcpus = [2]\nhourly = 1\nsizes = [2]\n', "unknown key(s) sizes"),
    ('[families."aws/m7a"]\nisa = "avx512f"\n', "families.'aws/m7a'.isa must be a list of strings"),
    ('[machines."x/y"]\nhourly = 1\narch = "arm"\n', "machines.'x/y'.arch must be one of x86_64, aarch64"),
    ('[machines."x/y"]\nhourly = 1\napproximate = "yes"\n', "machines.'x/y'.approximate must be true or false"),
])
def test_bad_families_name_file_and_key(tmp_path, text, message):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(PriceError, match="p.toml") as exc:
        load_prices(f)
    assert message in str(exc.value)


def test_select_machines_filters():
    t = load_prices()
    amd2 = select_machines(t, cloud="aws", vcpus=2, cpu="amd", gpu="none")
    assert [m.name for m in amd2] == ["aws/c6a.large", "aws/c7a.large", "aws/m6a.large", "aws/m7a.large",
                                      "aws/r6a.large", "aws/r7a.large"]
    arm = select_machines(t, vcpus=2, cpu="arm")
    assert {m.cloud for m in arm} == {"aws", "gcp", "azure"} and all(m.architecture == "aarch64" for m in arm)
    h100 = {m.name for m in select_machines(t, gpu="H100")}
    assert {"aws/p5.4xlarge", "gcp/a3-highgpu-1g", "azure/Standard_NC40ads_H100_v5"} <= h100
    assert not any("H200" in n for n in h100)
    assert {m.name for m in select_machines(t, gpu="L4")} & {"aws/g6e.xlarge"} == set()  # L4 is not L40S


def test_prices_command_table_filters_toml_and_this_machine(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from costbench.commands.cli import app

    run = CliRunner().invoke
    out = run(app, ["prices", "--cloud", "aws", "--vcpus", "2", "--cpu", "amd"])
    assert out.exit_code == 0, out.output
    assert "aws/c7a.large" in out.output and "0.10264" in out.output and "gcp/" not in out.output
    assert "6 machine type(s): the sizes of 6 families" in out.output
    summary = run(app, ["prices"])
    assert summary.exit_code == 0 and "aws/m7a" in summary.output and "--toml > prices.toml" in summary.output
    toml = run(app, ["prices", "--toml"])
    assert toml.exit_code == 0 and toml.output == default_prices_text()
    assert "costbench prices --toml > prices.toml" in toml.output  # the file says how it was made
    assert run(app, ["prices", "--toml", "--cloud", "aws"]).exit_code == 2
    assert "no machine type" in run(app, ["prices", "--gpu", "B300"]).output
    f = tmp_path / "p.toml"
    f.write_text('[machines."own/box"]\nhourly = 0.5\nvcpus = 2\ncpu_vendor = "AMD"\n')
    assert "own/box" in run(app, ["prices", "--prices", str(f), "--cloud", "own"]).output
    f.write_text('[machines."own/box"]\nhourly = -1\n')
    bad = run(app, ["prices", "--prices", str(f)])
    assert bad.exit_code == 2 and "p.toml" in bad.output and "machines.'own/box'.hourly" in bad.output

    # --this-machine: this machine's fingerprint (here a recorded one) and what it would be priced as.
    import json
    from pathlib import Path

    import costbench.harness.machine.env as machine_env
    fp = json.loads((Path(__file__).parent / "data" / "fingerprints" / "amd-epyc-avx2-2vcpu.json").read_text())
    monkeypatch.setattr(machine_env, "fingerprint", lambda: fp)
    me = run(app, ["prices", "--this-machine"])
    assert me.exit_code == 0, me.output
    assert "CPU 'AMD EPYC' (Zen 1-3)" in me.output and "inferred as aws/c6a.large (0.0765 USD/h)" in me.output
    assert "gcp/t2d-standard-2" in me.output  # the alternatives, in a table
    # A reference env.json holds the fingerprint under "fingerprint" (results/reference/2026-11-30-nvidia-h200/).
    h200 = tmp_path / "env.json"
    h200.write_text(json.dumps({"fingerprint": json.loads(
        (Path(__file__).parent / "data" / "fingerprints" / "intel-xeon-amx-16vcpu-h200.json").read_text())}))
    rec = run(app, ["prices", "--fingerprint", str(h200)])
    assert rec.exit_code == 0 and "aws/p5en.48xlarge ×1/8" in rec.output
