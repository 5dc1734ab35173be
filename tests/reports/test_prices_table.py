"""The price table: shipped defaults, a user file laid over them, machine assignments, cost formulas."""

import pytest

from costbench.harness.reports.prices import (
    PriceError, cost_per_million, default_prices_text, energy_cost_per_million, load_prices,
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
