"""Property tests: whatever bytes, JSON or YAML a user's files hold, the record reader and the sweep
config loader answer with records, skipped lines or the project's own errors, never anything
else; and every valid record written still loads."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.runs.record_grid import record_identity
from harness.runs.record_json import shape_problem
from harness.runs.record_schema import record_problem
from harness.runs.store import RunDir
from harness.runs.sweep_config import ConfigError, load_config, parse_config

# Derandomized: every run (and CI) tries the same inputs, so a pass here is a pass there.
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def _folder(scratch: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=scratch))


def _read(folder: Path, data: bytes):
    (folder / "samples.jsonl").write_bytes(data)
    contents = RunDir(folder).read()
    for record in contents.records:  # what counts is a record, finite and shallow
        assert record_problem(record, sweep="key" in record) is None and shape_problem(record) is None
    return contents


DEEP = b"[" * 100_000 + b"]" * 100_000


@SETTINGS
@given(data=st.binary(max_size=400))
@example(data=DEEP + b"\n")
@example(data=b'{"a": ' * 500 + b"1" + b"}" * 500 + b"\n")
@example(data=b"1" * 5000 + b"\n")
def test_the_record_reader_takes_any_bytes(scratch, data):
    contents = _read(_folder(scratch), data)
    assert len(contents.records) + len(contents.skipped) + len(contents.duplicates) <= data.count(b"\n") + 1


@SETTINGS
@given(values=st.lists(json_values, max_size=6))
def test_the_record_reader_takes_any_json(scratch, values):
    lines = b"".join(json.dumps(v).encode() + b"\n" for v in values)  # NaN and Infinity included, as Python writes them
    contents = _read(_folder(scratch), lines)
    assert len(contents.records) + len(contents.skipped) + len(contents.duplicates) == len(values)


finite_numbers = st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
extra_values = st.recursive(st.none() | st.booleans() | finite_numbers | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=10)


@st.composite
def records(draw, problem_id: str) -> dict:
    record = {"env": draw(st.text(min_size=1, max_size=10)), "problem_id": problem_id,
              "decoder": draw(st.sampled_from(["greedy", "redumix", "sample"])), "model": draw(st.text(max_size=10)),
              "seed": draw(st.integers(0, 10**6)), "completion": draw(st.text(max_size=40)),
              "score": draw(finite_numbers), "correct": draw(st.booleans()), "new_tokens": draw(st.integers(0, 999)),
              "latency_s": draw(finite_numbers), "decode_s": draw(finite_numbers)}
    extras = draw(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in record and k not in {
        "key", "lambda", "variant", "feedback_policy", "stage1_correct", "format_ok", "dtype"}), extra_values,
        max_size=4))
    return record | extras


@SETTINGS
@given(data=st.data(), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_record_holding_a_non_finite_number_is_skipped(scratch, data, bad):
    record = data.draw(records("p-0"))
    path = data.draw(st.sampled_from([k for k, v in record.items() if isinstance(v, float | int)
                                      and not isinstance(v, bool)]))
    record[path] = bad
    contents = _read(_folder(scratch), json.dumps(record).encode() + b"\n")  # as Python writes it: NaN, Infinity
    assert not contents.records and [s.line for s in contents.skipped] == [1]
    assert "not a finite number" in contents.skipped[0].reason


@SETTINGS
@given(data=st.data(), ids=st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=6))
def test_every_valid_record_written_loads_back(scratch, data, ids):
    written = [data.draw(records(problem_id)) for problem_id in ids]
    folder = _folder(scratch)
    RunDir(folder).append(written)
    contents = RunDir(folder).read()
    assert not contents.skipped and not contents.duplicates
    assert [record_identity(r) for r in contents.records] == [record_identity(r) for r in written]
    assert contents.records == json.loads(json.dumps(written))


def _load(scratch: Path, data: bytes) -> None:
    path = _folder(scratch) / "config.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError:
        pass


@SETTINGS
@given(data=st.binary(max_size=300))
@example(data=DEEP)
@example(data=b"models: [m]\nseeds: [1" + b"0" * 5000 + b"]\n")
def test_the_config_loader_takes_any_bytes(scratch, data):
    _load(scratch, data)


@SETTINGS
@given(text=st.text(max_size=200))
def test_the_config_loader_takes_any_text(scratch, text):
    _load(scratch, text.encode("utf-8", errors="surrogatepass"))


@SETTINGS
@given(value=json_values)
def test_the_config_loader_takes_any_yaml_structure(scratch, value):
    _load(scratch, yaml.safe_dump(value).encode())


# Configs shaped like real ones, with a value of any kind in any place: the checks go deep.
plausible = (st.sampled_from(["basic_arithmetic", "chain_sum", "greedy", "sample", "redumix", "binary", "auto", "cpu",
                              "float32", "strict", "smollm2-135m", "</answer>", ""])
             | st.integers(-3, 10) | st.floats(-1, 3) | st.sampled_from([math.nan, math.inf, 10**30]))
values = st.recursive(plausible | scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["name", "n", "config", "lambdas", "feedback", "label",
                                                         "temperature", "max_terms", "models", "x"]), inner,
                                        max_size=3), max_leaves=12)


@SETTINGS
@given(top=st.dictionaries(st.sampled_from(["models", "envs", "decoders", "seeds", "max_new_tokens", "batch_size",
                                            "stop", "dtype", "device", "extraction", "reference", "name"]), values,
                           max_size=8))
def test_the_config_checker_takes_any_values_in_a_configs_places(top):
    try:
        parse_config(top)
    except ConfigError:
        pass


envs = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["basic_arithmetic", "chain_sum"])},
                                      optional={"n": values, "config": values, "label": values}), min_size=1,
                max_size=2)
decoders = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["greedy", "sample", "redumix", "self_consistency",
                                                                    "dera", "soft"])},
                                          optional={"config": values, "lambdas": values, "feedback": values,
                                                    "label": values, "models": values}), min_size=1, max_size=3)


@SETTINGS
@example(top={"models": ["smollm2-135m"], "envs": [{"name": "basic_arithmetic", "config": {"name": None}}],
              "decoders": [{"name": "greedy"}]})
@given(top=st.fixed_dictionaries({"models": st.just(["smollm2-135m"]), "envs": envs, "decoders": decoders},
                                 optional={"seeds": values, "max_new_tokens": values, "batch_size": values,
                                           "stop": values, "dtype": values, "extraction": values, "reference": values}))
def test_the_config_checker_takes_any_values_in_a_valid_configs_entries(top):
    try:
        parse_config(top)
    except ConfigError:
        pass


@SETTINGS
@given(listed=decoders)
@example(listed=[{"name": "sample", "config": {"temperature": {"a": 1}}}])
def test_the_config_checker_takes_any_decoder_entries(listed):
    try:
        parse_config({"models": ["smollm2-135m"], "envs": [{"name": "basic_arithmetic", "n": 1}], "decoders": listed})
    except ConfigError:
        pass
