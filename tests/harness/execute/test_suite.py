"""Suite files: every bad input gets one clear error naming the file, the key and what was expected."""

from pathlib import Path

import pytest

from costbench.harness.execute.plan import make_plan, parse_filters
from costbench.harness.execute.load import SuiteError, load_suite
from costbench.harness.suite.case import PLANNED

REPO = Path(__file__).resolve().parents[3]

GOOD = """
name = "t"
models = ["digits-cnn"]
variants = ["fp32", {name = "int8-pt", recipe = "int8", per_channel = false}]
backends = ["onnxruntime", {name = "openvino", label = "ov-tput", hint = "throughput"}]
scenarios = ["single_stream"]
batch_sizes = [1, 4]
"""


def write(tmp_path, text, name="suite.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    return msg


def test_good_suite_and_shorthands(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    assert [v.recipe_name for v in suite.variants] == ["fp32", "int8"]
    assert suite.variants[1].options == {"per_channel": False}
    assert suite.backends[1].display == "ov-tput" and suite.backends[1].options == {"hint": "throughput"}
    cases = make_plan(suite)
    assert len(cases) == 1 * 2 * 2 * 1 * 2
    assert {c.backend for c in cases} == {"onnxruntime", "ov-tput"}


# The docs' suites; scripts/gpu_check_suite.toml is validated (and planned) in
# tests/backends/test_nvidia_probes.py::test_gpu_check_suite_file_plans
SHIPPED_SUITES = {"smoke.toml", "full.toml", "litert.toml", "compression.toml", "generative.toml"}


def test_shipped_suites_validate():
    paths = sorted((REPO / "suites").glob("*.toml"))
    missing = SHIPPED_SUITES - {p.name for p in paths}
    assert not missing, f"shipped suites missing from {REPO / 'suites'}: {sorted(missing)}"
    for path in paths:
        suite = load_suite(path)
        assert suite.name and suite.models and suite.variants and suite.backends, path
        assert make_plan(suite), f"{path} plans no case"


def test_the_smoke_suite_shows_what_costbench_is_for_in_few_cases():
    """The first run: several runtimes, fp32 beside int8, intervals across processes, and few cases (it must
    stay quick: its wall time is measured and quoted in the README, not asserted here)."""
    suite = load_suite(REPO / "suites" / "smoke.toml")
    runnable = [c for c in make_plan(suite) if c.status == PLANNED]
    assert len({c.backend for c in runnable}) >= 3
    assert {"fp32", "int8"} <= {c.variant for c in runnable}
    assert {c.backend for c in runnable if c.variant == "int8"} >= {"onnxruntime", "openvino"}
    # Fewer cases, never a weaker measurement: each case to a declared precision, from 3 processes up.
    assert suite.processes >= 3 and suite.precision is not None and suite.precision <= 0.05
    assert suite.max_processes >= 5
    assert len(runnable) <= 8


def test_missing_file(tmp_path):
    assert "not found" in error_of(tmp_path / "nope.toml")


def test_malformed_toml(tmp_path):
    msg = error_of(write(tmp_path, 'name = "x"\nmodels = ["a",\n'))
    assert "not valid TOML" in msg


def test_missing_keys(tmp_path):
    msg = error_of(write(tmp_path, 'name = "x"\nmodels = ["digits-cnn"]\n'))
    assert "variants: Field required" in msg and "backends: Field required" in msg


def test_wrong_type(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("batch_sizes = [1, 4]", 'batch_sizes = "1"')))
    assert "batch_sizes" in msg and "'1'" in msg


def test_negative_batch(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("batch_sizes = [1, 4]", "batch_sizes = [0]")))
    assert "batch_sizes" in msg and ">= 1" in msg


def test_processes_must_be_at_least_one(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("batch_sizes = [1, 4]", "batch_sizes = [1, 4]\nprocesses = 0")))
    assert "processes" in msg and "greater than or equal to 1" in msg and "(got 0)" in msg


def test_processes_default_and_interleaving(tmp_path):
    """Compare-grade by default; the schedule is round-robin over cases, a skipped case once."""
    from costbench.harness.execute.plan import interleave, make_plan

    suite = load_suite(write(tmp_path, GOOD))
    assert suite.processes == 5
    cases = make_plan(suite)
    jobs = interleave(cases)
    planned = [c for c in cases if c.status == "planned"]
    assert len(jobs) == 5 * len(planned) + (len(cases) - len(planned))
    first_round = [j for j in jobs if j.process == 0]
    assert [j.case_id for j in first_round] == [c.case_id for c in cases]
    assert [j.case_id for j in jobs[len(cases):len(cases) + len(planned)]] == [c.case_id for c in planned]
    assert len({j.job_id for j in jobs}) == len(jobs)
    rest = interleave(cases, done={(planned[0].case_id, 0), (planned[0].case_id, 1)})
    assert len(rest) == len(jobs) - 2 and (planned[0].case_id, 2) in {(j.case_id, j.process) for j in rest}


def test_unknown_backend(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('"onnxruntime"', '"tensorflowlite"')))
    assert "backends[0].name: unknown backend 'tensorflowlite'" in msg and "onnxruntime" in msg


def test_unknown_model(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('"digits-cnn"', '"resnet-9000"')))
    assert "models[0].id: unknown model 'resnet-9000'" in msg and "digits-cnn" in msg


def test_unknown_recipe_and_option(tmp_path):
    text = GOOD.replace('"fp32"', '"fp8"').replace("per_channel = false", "per_chanel = false")
    msg = error_of(write(tmp_path, text))
    assert "variants[0].name: unknown recipe 'fp8'" in msg
    assert "variants[1].per_chanel: Extra inputs are not permitted" in msg


def test_bad_backend_option_value(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('hint = "throughput"', 'hint = "fast"')))
    assert "backends[1].hint" in msg and "'latency' or 'throughput'" in msg


def test_unknown_scenario_field(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('scenarios = ["single_stream"]',
                                                 '[[scenarios]]\nkind = "single_stream"\nmin_cnt = 3')))
    assert "scenarios[0]" in msg and "min_cnt" in msg


def test_duplicate_labels(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('"onnxruntime", ', '"openvino", ').replace('label = "ov-tput", ', "")))
    assert "duplicate" in msg and "openvino" in msg


def test_custom_model_needs_its_fields(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('models = ["digits-cnn"]', 'models = [{id = "m", source = "torch"}]')))
    assert "models[0]" in msg and "factory" in msg


def test_corrupt_onnx_file(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07not a protobuf at all" * 10)
    msg = error_of(write(tmp_path, GOOD.replace('models = ["digits-cnn"]',
                                                 'models = [{id = "mine", source = "onnx", path = "broken.onnx"}]')))
    assert "models[0].path" in msg and "broken.onnx" in msg and "not a valid ONNX" in msg


def test_missing_onnx_file(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace('models = ["digits-cnn"]',
                                                 'models = [{id = "mine", source = "onnx", path = "gone.onnx"}]')))
    assert "models[0].path" in msg and "does not exist" in msg


def test_bad_exclude_key(tmp_path):
    msg = error_of(write(tmp_path, GOOD + '\n[[exclude]]\nbackendz = "x"\n'))
    assert "exclude[0]" in msg and "backendz" in msg


def test_plan_skips_with_reasons_and_filters(tmp_path):
    suite = load_suite(write(tmp_path, GOOD.replace('backends = ["onnxruntime",', 'backends = ["torch", "onnxruntime",')))
    cases = make_plan(suite)
    torch_int8 = [c for c in cases if c.backend == "torch" and c.variant == "int8-pt"]
    assert torch_int8 and all(c.status == "skipped" for c in torch_int8)
    assert "onnx" in torch_int8[0].reason and "torch-module" in torch_int8[0].reason
    only = make_plan(suite, parse_filters(["backend=onnx*", "batch_size=4"]))
    assert {(c.backend, c.batch_size) for c in only} == {("onnxruntime", 4)}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_filters(["colour=red"])


def test_exclude_drops_cases(tmp_path):
    suite = load_suite(write(tmp_path, GOOD + '\n[[exclude]]\nbackend = "ov-*"\nvariant = "int8*"\n'))
    keys = {(c.backend, c.variant) for c in make_plan(suite)}
    assert ("ov-tput", "int8-pt") not in keys and ("ov-tput", "fp32") in keys
