"""One `SamplingSettings` for every decoder and stage that samples: its validation, that each
owner exposes the same four settings under its own names, that the settings ReDuMix gained
(stage-4 min_p, stage-1 top_k and min_p) take effect while their defaults change nothing,
and that folders written before those settings existed still resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from decoders import get_decoder
from decoders.mix_step import MixtureStep
from decoders.mixture import mix_logprobs
from decoders.redumix import stages as redumix_pipeline
from decoders.sampling import draw, filter_logprobs, row_generator
from decoders.sampling_settings import NAMES, SamplingSettings
from envs import get_env
from harness.engine import lockstep
from harness.engine.prompts import encode, render_chat
from harness.runs.folder_claim import claim_folder
from harness.runs.record_grid import grid_of
from harness.runs.runner import RunSpec, run
from harness.runs.store import RunDir
from harness.runs.sweep_config import parse_config
from tests.tiny import tiny_model

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
SHORT = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": "8"}
MAX_NEW = 10

# Every owner of sampling settings: (decoder, field prefix, attribute holding its SamplingSettings,
# settings that make it sample, today's defaults as (temperature, top_k, top_p, min_p)).
OWNERS = [
    ("sample", "", "sampling", {}, (1.0, 0, 1.0, 0.0)),
    ("self_consistency", "", "sampling", {}, (1.0, 0, 1.0, 0.0)),
    ("dera", "", "sampling", {"sample": "true"}, (1.0, 0, 1.0, 0.0)),
    ("redumix", "", "sampling", {"sample": "true"}, (1.0, 0, 1.0, 0.0)),
    ("redumix", "stage1_", "stage1_sampling", {"stage1_sample": "true"}, (1.0, 0, 1.0, 0.0)),
    ("soft", "", "sampling", {}, (0.6, 30, 0.95, 0.001)),
    ("gumbel", "", "sampling", {}, (0.6, 30, 0.95, 0.001)),
    ("soft", "after_thinking_", "after_thinking_sampling", {"after_thinking_temperature": "1.0"}, None),
    ("gumbel", "after_thinking_", "after_thinking_sampling", {"after_thinking_temperature": "1.0"}, None),
]
IDS = [f"{name}:{prefix or '-'}" for name, prefix, *_ in OWNERS]
# What each owner's error says to do instead of a temperature <= 0.
TEMPERATURE_FIX = {
    ("sample", ""): "for deterministic decoding use decoder 'greedy'",
    ("self_consistency", ""): "for deterministic decoding use decoder 'greedy'",
    ("dera", ""): "use sample=false for greedy",
    ("redumix", ""): "use sample=false for greedy",
    ("redumix", "stage1_"): "use stage1_sample=false for greedy",
    ("soft", ""): "e.g. temperature=0.6",
    ("gumbel", ""): "e.g. temperature=0.6",
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "message"), [
    ({"temperature": 0.0}, "temperature (=0.0) must be > 0; for deterministic decoding use decoder 'greedy'"),
    ({"top_k": -1}, "top_k (=-1) must be >= 0; use 0 to keep every token"),
    ({"top_p": 0.0}, "top_p (=0.0) must be in (0, 1]; use 1.0 to turn it off"),
    ({"top_p": 1.5}, "top_p (=1.5) must be in (0, 1]; use 1.0 to turn it off"),
    ({"min_p": 1.0}, "min_p (=1.0) must be in [0, 1); use 0 to turn it off"),
    ({"min_p": -0.1}, "min_p (=-0.1) must be in [0, 1); use 0 to turn it off"),
])
def test_invalid_settings_name_the_parameter_the_value_and_the_fix(settings, message):
    with pytest.raises(ValueError) as err:
        SamplingSettings(**settings)
    assert str(err.value) == message


def test_settings_default_to_no_change_and_are_frozen():
    settings = SamplingSettings()
    assert settings.fields() == {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    assert settings.fields("stage1_") == {"stage1_temperature": 1.0, "stage1_top_k": 0, "stage1_top_p": 1.0,
                                          "stage1_min_p": 0.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.top_k = 3
    # The error wording (prefix, fix) is not part of the settings.
    assert SamplingSettings(0.5, prefix="stage1_", temperature_fix="x") == SamplingSettings(0.5)
    assert dataclasses.asdict(SamplingSettings(0.5)) == {"temperature": 0.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0}


@pytest.mark.parametrize(("name", "prefix", "attr", "sampling", "defaults"), OWNERS, ids=IDS)
def test_every_owner_validates_each_setting_under_its_own_name(name, prefix, attr, sampling, defaults):
    for setting, value, needle in [("top_k", "-1", "(=-1) must be >= 0; use 0 to keep every token"),
                                   ("top_p", "1.5", "(=1.5) must be in (0, 1]; use 1.0 to turn it off"),
                                   ("min_p", "1", "(=1.0) must be in [0, 1); use 0 to turn it off")]:
        with pytest.raises(ValueError) as err:
            get_decoder(name, **sampling, **{prefix + setting: value})
        assert f"{prefix}{setting} {needle}" in str(err.value)
    with pytest.raises(ValueError) as err:
        get_decoder(name, **{prefix + "temperature": "-1"})
    fix = TEMPERATURE_FIX.get((name, prefix), "must be >= 0; 0 answers greedily")
    assert f"{prefix}temperature (=-1.0) must be " in str(err.value) and fix in str(err.value)


def test_mixture_step_validates_like_the_decoders():
    with pytest.raises(ValueError, match=r"^min_p \(=1.5\) must be in \[0, 1\); use 0 to turn it off$"):
        MixtureStep((0.5, 0.5), sample=True, min_p=1.5)
    with pytest.raises(ValueError, match=r"^temperature \(=0\) must be > 0; use sample=False for greedy$"):
        MixtureStep((0.5, 0.5), temperature=0)


# -- the same settings everywhere ----------------------------------------------------------


@pytest.mark.parametrize(("name", "prefix", "attr", "sampling", "defaults"), OWNERS, ids=IDS)
def test_every_sampling_decoder_and_stage_exposes_the_same_four_settings(name, prefix, attr, sampling, defaults):
    plain = get_decoder(name, **sampling)
    config = plain.config()
    assert all(prefix + setting in config for setting in NAMES)
    held = getattr(plain, attr)
    assert isinstance(held, SamplingSettings)
    if defaults is not None:  # the after-thinking temperature is the one that makes it sample
        assert tuple(config[prefix + s] for s in NAMES) == defaults == tuple(held.fields().values())
    # Set from strings (command line, sweep configs), they reach the settings under the plain names.
    given = {"temperature": "0.7", "top_k": "5", "top_p": "0.9", "min_p": "0.05"}
    decoder = get_decoder(name, **sampling | {prefix + k: v for k, v in given.items()})
    assert getattr(decoder, attr) == SamplingSettings(0.7, 5, 0.9, 0.05)
    assert getattr(decoder, attr).fields(prefix) == {prefix + k: decoder.config()[prefix + k] for k in NAMES}
    # A copy with other settings holds its own (checked) settings, not the original's.
    changed = dataclasses.replace(decoder, **{prefix + "top_k": 2})
    assert getattr(changed, attr).top_k == 2 and getattr(decoder, attr).top_k == 5


def test_the_answer_phase_of_the_soft_decoders_is_greedy_at_temperature_zero():
    assert get_decoder("soft").after_thinking_sampling is None
    assert get_decoder("soft", after_thinking_top_k="3").after_thinking_sampling is None


def test_mixtures_and_derived_decoders_carry_their_owners_settings():
    redumix = get_decoder("redumix", lam="0.3", sample="true", temperature="0.5", top_k="4", top_p="0.8",
                          min_p="0.1", stage1_sample="true", stage1_top_k="2", stage1_min_p="0.2")
    assert redumix.mixture().sampling == redumix.sampling == SamplingSettings(0.5, 4, 0.8, 0.1)
    assert redumix.first_attempt_decoder().sampling == redumix.stage1_sampling == SamplingSettings(1.0, 2, 1.0, 0.2)
    dera = get_decoder("dera", lam="0.5", sample="true", temperature="0.5", min_p="0.1")
    assert dera.mixture().sampling == dera.mixture([0.0, 1.0]).sampling == dera.sampling
    many = get_decoder("self_consistency", n="1,3", temperature="0.7", top_k="5", top_p="0.9", min_p="0.05")
    assert many.sampler().sampling == many.sampling


def test_new_settings_at_their_defaults_are_the_config_without_them():
    assert get_decoder("redumix", min_p="0", stage1_top_k="0", stage1_min_p="0") == get_decoder("redumix")
    assert get_decoder("soft", after_thinking_min_p="0") == get_decoder("soft")
    # Every other key is one ReDuMix had before (stage1_thinking was added with thinking models).
    keys = get_decoder("redumix").config().keys() - {"min_p", "stage1_top_k", "stage1_min_p", "stage1_thinking"}
    assert keys == {"lam", "feedback", "sample", "temperature", "top_p", "top_k", "reflect_prompt", "redo_prompt",
                    "reflection_max_new_tokens", "context_budget", "summary_prompt", "summary_max_new_tokens",
                    "lambdas_per_batch", "stage1_sample", "stage1_temperature", "stage1_top_p"}


# -- numerics: the same seed gives the same tokens -----------------------------------------


def _rngs(n: int, seed: int = 0) -> list[torch.Generator]:
    return [row_generator(seed, f"p{i}") for i in range(n)]


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.8, "min_p": 0.05},
                                      {"temperature": 1.3, "top_k": 7, "top_p": 0.9, "min_p": 0.01}])
def test_draws_are_the_filtering_and_draw_functions_unchanged(settings):
    torch.manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(6, 40) * 3, dim=-1)
    full = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0} | settings
    expected = draw(filter_logprobs(logprobs, *full.values()), _rngs(6))
    assert torch.equal(SamplingSettings(**settings).draw(logprobs, _rngs(6)), expected)
    assert torch.equal(get_decoder("sample", **settings).step(logprobs[None], _rngs(6)).token_ids, expected)


def test_redumix_stage4_defaults_draw_as_before_min_p_existed():
    torch.manual_seed(1)
    logprobs = torch.log_softmax(torch.randn(2, 6, 40) * 3, dim=-1)
    decoder = get_decoder("redumix", lam="0.3", sample="true", temperature="0.8", top_k="10", top_p="0.9")
    mixed = mix_logprobs(logprobs, (0.3, 0.7))
    before = draw(filter_logprobs(mixed, 0.8, 10, 0.9), _rngs(6))  # min_p left at filter_logprobs' default
    assert torch.equal(decoder.step(logprobs, _rngs(6)).token_ids, before)


def test_redumix_stage4_min_p_takes_effect():
    torch.manual_seed(2)
    logits = torch.randn(2, 64, 30)
    logits[:, torch.arange(64), torch.randint(0, 30, (64,))] += 6.0  # a clear favourite per row
    logprobs = torch.log_softmax(logits, dim=-1)
    greedy = get_decoder("redumix", lam="0.5").step(logprobs, _rngs(64)).token_ids
    sampled = get_decoder("redumix", lam="0.5", sample="true", temperature="2").step(logprobs, _rngs(64)).token_ids
    truncated = get_decoder("redumix", lam="0.5", sample="true", temperature="2", min_p="0.9")
    assert not torch.equal(sampled, greedy)  # sampling at temperature 2 leaves the favourite sometimes
    assert torch.equal(truncated.step(logprobs, _rngs(64)).token_ids, greedy)  # min_p keeps only the favourite


# -- on the tiny model ---------------------------------------------------------------------


def _first_attempts(tiny, **settings) -> list[str]:
    env = get_env("basic_arithmetic", **EASY)
    decoder = get_decoder("redumix", lam="1", **SHORT, **settings)
    stages = redumix_pipeline.first_stages(env, tiny, decoder, env.problems(3, 0), max_new_tokens=MAX_NEW,
                                           stop=[], seed=0)
    return [stage.stage1_completion for stage in stages]


def _greedy_first_attempts(tiny) -> list[str]:
    env = get_env("basic_arithmetic", **EASY)
    texts = [render_chat(tiny.tokenizer, [{"role": "user", "content": env.user_prompt(p)}])
             for p in env.problems(3, 0)]
    return [lockstep.decode(tiny, [[encode(tiny.tokenizer, x)]], get_decoder("greedy"),
                            max_new_tokens=MAX_NEW)[0].text for x in texts]


def test_stage1_top_k_and_min_p_take_effect(tiny):
    greedy = _greedy_first_attempts(tiny)
    hot = {"stage1_sample": "true", "stage1_temperature": "2.0"}
    assert _first_attempts(tiny, **hot) != greedy
    assert _first_attempts(tiny, **hot, stage1_top_k="1") == greedy
    assert _first_attempts(tiny, **hot, stage1_min_p="0.999") == greedy
    # At their defaults the settings change nothing: the sampled attempts are those without them.
    assert _first_attempts(tiny, **hot, stage1_top_k="0", stage1_min_p="0") == _first_attempts(tiny, **hot)


def test_stage4_min_p_takes_effect_in_the_pipeline(tiny):
    env = get_env("basic_arithmetic", **EASY)
    problems = env.problems(3, 0)

    def answers(**settings):
        decoder = get_decoder("redumix", lam="0.5", **SHORT, **settings)
        results = redumix_pipeline.solve_batch(env, tiny, decoder, problems, max_new_tokens=MAX_NEW, stop=[], seed=0)
        return [r.row.text for r in results]

    hot = {"sample": "true", "temperature": "2.0"}
    assert answers(**hot) != answers()
    assert answers(**hot, min_p="0.999") == answers()
    assert answers(**hot, min_p="0") == answers(**hot)


# -- folders written before the new settings ----------------------------------------------

NEW_KEYS = ("min_p", "stage1_top_k", "stage1_min_p")


def _run_spec(**extra) -> RunSpec:
    return RunSpec(env="basic_arithmetic", decoder="redumix", n=3, seed=0, model="tiny", env_config=dict(EASY),
                   decoder_config={"lam": "0,1", **SHORT, **extra}, max_new_tokens=MAX_NEW, batch_size=2)


def _strip_new_keys(out) -> None:
    """Rewrite `out`'s spec.json as a version without the new settings wrote it."""
    spec = json.loads((out / "spec.json").read_text())
    for key in NEW_KEYS:
        del spec["run"]["decoder_config"][key]
    (out / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def test_a_run_folder_from_before_the_new_settings_resumes_without_decoding(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = run(_run_spec(), out, loaded=tiny, progress=False)
    assert first.n == 6
    records = (out / "samples.jsonl").read_text()
    _strip_new_keys(out)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a complete folder was decoded again")

    monkeypatch.setattr(lockstep, "decode", no_decoding)
    again = run(_run_spec(), out, loaded=tiny, progress=False)
    assert again.n == 0 and again.skipped == 6  # every (problem, lambda) record
    assert (out / "samples.jsonl").read_text() == records
    # The rewritten spec names the new settings, at their defaults.
    stored = json.loads((out / "spec.json").read_text())["run"]["decoder_config"]
    assert {key: stored[key] for key in NEW_KEYS} == {"min_p": 0.0, "stage1_top_k": 0, "stage1_min_p": 0.0}
    # Setting one of them to anything else is another run: refused, not mixed in.
    _strip_new_keys(out)
    with pytest.raises(ValueError, match=r"already holds a different run \(differs in: decoder_config\)"):
        run(_run_spec(stage1_top_k="5"), out, loaded=tiny, progress=False)


def test_a_sweep_folder_from_before_the_new_settings_is_claimed(tmp_path):
    config = parse_config({"models": ["smollm2-135m"], "seeds": [0], "max_new_tokens": 10,
                           "envs": [{"name": "basic_arithmetic", "n": 2, "config": dict(EASY)}],
                           "decoders": [{"name": "greedy"}, {"name": "redumix", "lambdas": [0, 1]},
                                        {"name": "soft", "label": "soft"}]})
    resolved = json.loads(json.dumps(config.resolved()))
    old = json.loads(json.dumps(resolved))
    for entry in old["decoders"]:
        for key in (*NEW_KEYS, "after_thinking_min_p"):
            entry["resolved_config"].pop(key, None)
    store = RunDir(tmp_path / "sweep")
    store.write_spec({"sweep": old, "variants": config.variants()})
    grid = grid_of(store.read_spec())
    claim_folder(store, "sweep", resolved, grid, note=lambda line: None)  # no error: the same sweep

    changed = parse_config({"models": ["smollm2-135m"], "seeds": [0], "max_new_tokens": 10,
                            "envs": [{"name": "basic_arithmetic", "n": 2, "config": dict(EASY)}],
                            "decoders": [{"name": "greedy"},
                                         {"name": "redumix", "lambdas": [0, 1], "config": {"min_p": 0.1}},
                                         {"name": "soft", "label": "soft"}]})
    with pytest.raises(ValueError, match=r"a different sweep \(differs in: decoders\)"):
        claim_folder(store, "sweep", json.loads(json.dumps(changed.resolved())), grid, note=lambda line: None)
