"""Soft-token decoders (soft, gumbel): one-hot equals greedy, the soft input is weights @ E,
Gumbel-max sampling is exact, thinking ends per row (marker, budget, Cold Stop) with the
forced marker where the record says, and every draw is seeded per row."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from decoders import get_decoder
from decoders.sampling import filter_logprobs, row_generator
from decoders.soft_weights import dirichlet, gumbel_softmax, kept_distribution
from decoders.thinking import marker_variants
from envs import get_env
from harness.cli import main
from harness.engine import lockstep
from harness.engine.prompts import encode
from harness.methods import Generation, get_method
from harness.runs.sweep_config import ConfigError, parse_config
from tests.tiny import tiny_model

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
# On the tiny model (entropy ~3.3 nats at temperature 1) this threshold makes rows Cold-Stop at
# different steps; "ab" is a two-token end marker, forced token by token.
STAGGERED = {"think_end": "ab", "cold_stop_entropy": "3.35", "cold_stop_steps": "2", "temperature": "1.0"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded():
    return tiny_model()


@pytest.fixture(scope="module")
def env():
    return get_env("basic_arithmetic", **EASY)


def _solve(loaded, env, name, config, n=4, seed=0, max_new_tokens=24, save_steps=False):
    method = get_method(name, **config)
    gen = Generation(max_new_tokens=max_new_tokens, stop=(), seed=seed, save_steps=save_steps)
    return method.solve(env, {"policy": loaded}, env.problems(n, 0), gen)


@pytest.mark.parametrize("config", [{"max_topk": "1"}, {"top_k": "1"}])
def test_one_hot_weights_reproduce_greedy_token_for_token(loaded, env, config):
    greedy = _solve(loaded, env, "greedy", {})
    soft = _solve(loaded, env, "soft", config | {"think_end": "ab"})
    eos = loaded.tokenizer.eos_token_id
    assert any(g.row.token_ids[-1] == eos for g in greedy)  # the EOS case is exercised
    for g, s in zip(greedy, soft, strict=True):
        # Where greedy ends on EOS, a thinking row instead ends its thinking there: the marker
        # takes the EOS's place.
        same = g.row.token_ids[:-1] if g.row.token_ids[-1] == eos else g.row.token_ids
        assert s.row.token_ids[: len(same)] == same
        if g.row.token_ids[-1] == eos:
            assert (s.extras["think_end"], s.extras["think_end_step"]) == ("eos", len(same))
        assert s.extras["effective_tokens_mean"] == pytest.approx(1.0)


def test_the_soft_input_is_the_weights_times_the_embedding_matrix(loaded):
    prompt = encode(loaded.tokenizer, "2 + 3 =")
    decoder = get_decoder("soft", think_end="ab", temperature=1.0).bind(loaded.tokenizer)
    seen = []
    lockstep.decode(loaded, [[prompt]], decoder, max_new_tokens=2, on_step=seen.append)
    step = seen[0].step
    weights = torch.zeros(len(loaded.tokenizer)).scatter(0, step.soft_ids[0], step.soft_weights[0])
    assert bool(step.soft_mask[0]) and (weights > 0).sum() > 1
    embed = loaded.model.get_input_embeddings()
    mixed = weights @ embed.weight  # what the engine should feed at step 1
    inputs = torch.cat([embed(torch.tensor(prompt)), mixed[None]])[None]
    with torch.no_grad():
        expected = torch.log_softmax(loaded.model(inputs_embeds=inputs).logits[0, -1], dim=-1)
    torch.testing.assert_close(seen[1].logprobs[0, 0], expected, atol=1e-5, rtol=1e-5)


def test_gumbel_at_tiny_tau_is_one_hot_on_the_gumbel_max():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    noise = torch.tensor([[0.1, 1.2, -0.3, 5.0]])
    weights, position = gumbel_softmax(probs, noise, tau=1e-4)
    winner = int((probs.log() + noise).argmax())
    assert int(position) == winner == 1
    assert weights[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_gumbel_tokens_at_tau_1_over_the_whole_vocabulary_follow_the_model():
    # One step of many rows over a fixed distribution: the Gumbel-max token is an exact sample.
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    probs = torch.softmax(logits, dim=-1)
    rows = 6000
    decoder = get_decoder("gumbel", tau=1.0, max_topk=6, top_k=0, top_p=1.0, min_p=0.0, temperature=1.0,
                          think_end="x")
    object.__setattr__(decoder, "_markers", ((99,),))
    state = decoder.init_state(rows)
    step = decoder.step(torch.log_softmax(logits, -1).expand(1, rows, 6),
                        [row_generator(7, f"r{i}") for i in range(rows)], state)
    counts = torch.bincount(step.token_ids, minlength=6).double()
    assert chisquare(counts.numpy(), (probs.double() * rows).numpy()).pvalue > 0.001


def test_dirichlet_weights_average_to_the_kept_probabilities():
    probs = torch.tensor([[0.6, 0.3, 0.1]]).expand(3000, 3)
    weights = dirichlet(probs, alpha=4.0, rngs=[row_generator(1, f"r{i}") for i in range(3000)])
    assert torch.allclose(weights.sum(-1), torch.ones(3000))
    assert weights.mean(0).tolist() == pytest.approx([0.6, 0.3, 0.1], abs=0.02)


@pytest.mark.parametrize("top_k, top_p, min_p", [(30, 0.95, 0.001), (5, 0.5, 0.0), (40, 1.0, 0.05), (3, 0.9, 0.2)])
def test_the_top_k_shortcut_keeps_what_full_filtering_keeps(top_k, top_p, min_p):
    logprobs = torch.log_softmax(torch.randn(6, 300, generator=torch.Generator().manual_seed(top_k)) * 3, dim=-1)
    full = filter_logprobs(logprobs, 0.6, top_k, top_p, min_p)
    probs, ids = kept_distribution(logprobs, 0.6, top_k, top_p, min_p, max_topk=top_k)
    dense = torch.zeros_like(logprobs).scatter(-1, ids, probs)
    torch.testing.assert_close(dense, full.exp(), atol=1e-6, rtol=1e-5)


def test_kept_distribution_applies_min_p_relative_to_the_top_and_caps_at_max_topk():
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs, ids = kept_distribution(lp, 1.0, 0, 1.0, 0.2, max_topk=10)  # keeps p >= 0.2 * 0.5
    assert ids[0, :3].tolist() == [0, 1, 2] and probs[0, 3] == 0
    assert probs[0, :3].tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95])
    probs, ids = kept_distribution(lp, 1.0, 0, 1.0, 0.0, max_topk=2)
    assert ids[0].tolist() == [0, 1] and probs[0].tolist() == pytest.approx([0.625, 0.375])


def test_rows_that_stop_thinking_at_different_steps_decode_as_each_alone(loaded, env):
    # Dirichlet draws while thinking, sampled answers after: each row's draws are its own.
    config = STAGGERED | {"mode": "dirichlet", "after_thinking_temperature": "1.0"}
    batched = _solve(loaded, env, "soft", config, n=6)
    assert len({a.extras["think_end_step"] for a in batched}) >= 3  # the rows really switch apart
    for i, attempt in enumerate(batched):
        alone = get_method("soft", **config).solve(
            env, {"policy": loaded}, [attempt.problem], Generation(max_new_tokens=24, stop=(), seed=0))[0]
        assert alone.row.token_ids == attempt.row.token_ids, i
        for key, value in attempt.extras.items():  # means differ in the last digit at most (batched sums)
            assert alone.extras[key] == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value)


@pytest.mark.parametrize("config, reason", [
    ({"max_think_tokens": "5"}, "budget"),
    (STAGGERED, "cold_stop"),
])
def test_a_forced_marker_is_in_the_text_at_the_step_the_record_says(loaded, env, config, reason):
    marker = list(marker_variants(loaded.tokenizer, "ab")[0])
    for attempt in _solve(loaded, env, "soft", {"think_end": "ab"} | config, n=6, save_steps=True):
        at = attempt.extras["think_end_step"]
        assert attempt.extras["think_end"] == reason
        assert attempt.row.token_ids[at : at + len(marker)] == marker
        assert attempt.extras["think_steps"] == at  # every step before the marker fed a soft input
        assert attempt.steps["soft"][at:] == [0.0] * (len(attempt.steps["soft"]) - at)
        if reason == "budget":
            assert at == 5


def test_an_emitted_marker_ends_thinking_where_it_starts(loaded, env):
    attempts = _solve(loaded, env, "soft", {"think_end": " ", "temperature": "1.0"}, n=6)
    ended = [a for a in attempts if a.extras["think_end"] == "marker"]
    assert ended, "no row wrote the marker; pick another"
    for attempt in ended:
        at = attempt.extras["think_end_step"]
        assert loaded.tokenizer.decode(attempt.row.token_ids[at : at + 1]) == " "
        assert attempt.extras["think_steps"] == at


@pytest.mark.parametrize("name, config", [
    ("soft", {"mode": "dirichlet"}), ("soft", {"mode": "different_tokens"}), ("gumbel", {}),
    ("soft", {"after_thinking_temperature": "1.0", "max_think_tokens": "3"}),
])
def test_same_seed_same_output_and_another_seed_changes_it(loaded, env, name, config):
    first = [a.row.token_ids for a in _solve(loaded, env, name, config | {"think_end": "ab"}, seed=0)]
    again = [a.row.token_ids for a in _solve(loaded, env, name, config | {"think_end": "ab"}, seed=0)]
    other = [a.row.token_ids for a in _solve(loaded, env, name, config | {"think_end": "ab"}, seed=1)]
    assert first == again and first != other


def test_a_tau_list_decodes_each_value_as_a_variant(loaded, env):
    both = _solve(loaded, env, "gumbel", {"tau": "0.1,1", "think_end": "ab"})
    assert sorted({a.variant["tau"] for a in both}) == [0.1, 1.0] and len(both) == 8
    for tau in (0.1, 1.0):
        alone = _solve(loaded, env, "gumbel", {"tau": str(tau), "think_end": "ab"})
        assert [a.row.token_ids for a in both if a.variant["tau"] == tau] == [a.row.token_ids for a in alone]
        assert all(a.method_config["tau"] == tau for a in both if a.variant["tau"] == tau)


@pytest.mark.parametrize("name, config, needle", [
    ("gumbel", {"tau": "0"}, "tau (=0.0) must be > 0"),
    ("gumbel", {"tau": "0.5,-1"}, "tau (=-1.0) must be > 0"),
    ("soft", {"max_topk": "0"}, "max_topk (=0) must be a whole number >= 1"),
    ("soft", {"min_p": "1"}, "min_p (=1.0) must be in [0, 1)"),
    ("soft", {"mode": "dirichlt"}, "Unknown mode 'dirichlt'. Did you mean: dirichlet?"),
])
def test_bad_settings_name_the_parameter_and_the_fix(name, config, needle):
    with pytest.raises(ValueError) as err:
        get_decoder(name, **config)
    assert needle in str(err.value)


def test_a_marker_the_tokenizer_cannot_write_is_refused(loaded):
    with pytest.raises(ValueError, match=r"think_end \(='€'\) cannot be written by this tokenizer"):
        get_decoder("soft", think_end="€").bind(loaded.tokenizer)


def test_a_budget_beyond_max_new_tokens_is_refused_before_anything_is_written(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "o"
    code = main(["run", "--env", "basic_arithmetic", "--decoder", "soft", "--decoder-config", "max_think_tokens=64",
                 "--max-new-tokens", "32", "--model", str(tiny_model_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "max_think_tokens (=64) is larger than max_new_tokens (=32)" in err
    assert not (out / "samples.jsonl").exists() and not (out / "spec.json").exists()
    with pytest.raises(ConfigError, match=r"decoders\[0\]\.config: max_think_tokens \(=64\)"):
        parse_config({"models": [str(tiny_model_dir)], "max_new_tokens": 32, "envs": [{"name": "basic_arithmetic"}],
                      "decoders": [{"name": "soft", "config": {"max_think_tokens": 64}}]})


def test_records_carry_the_thinking_summary(loaded, env):
    for attempt in _solve(loaded, env, "gumbel", {"think_end": "ab", "max_think_tokens": "4"}):
        extras = attempt.extras
        assert extras["think_steps"] == 4 and extras["think_end"] == "budget"
        assert 1.0 <= extras["effective_tokens_mean"] <= 10.0 and 0 < extras["top1_weight_mean"] <= 1.0
        assert extras["weights_entropy_mean"] == pytest.approx(math.log(extras["effective_tokens_mean"]), abs=0.5)


def test_a_sweep_grids_over_tau_max_topk_and_mode_and_reports_them(tiny_model_dir, tmp_path):
    from harness.runs.sweep import plan, run_sweep

    # float32: in bfloat16 the random tiny model can end a thinking phase at EOS before the budget.
    data = {"models": [str(tiny_model_dir)], "seeds": [0], "max_new_tokens": 12, "batch_size": 4, "dtype": "float32",
            "envs": [{"name": "basic_arithmetic", "n": 3, "config": dict(EASY)}],
            "decoders": [{"name": "greedy"},
                         {"name": "soft", "config": {"mode": ["probs", "dirichlet"], "max_topk": [2, 5],
                                                     "think_end": "ab", "max_think_tokens": 6}},
                         {"name": "gumbel", "config": {"tau": [0.1, 1.0], "think_end": "ab"}}]}
    config = parse_config(data)
    labels = [d.label for d in config.decoders]
    assert labels == ["greedy", "soft mode=probs max_topk=2", "soft mode=probs max_topk=5",
                      "soft mode=dirichlet max_topk=2", "soft mode=dirichlet max_topk=5", "gumbel"]
    assert len(plan(config)) == 6  # gumbel's two taus are variants of one unit
    out = tmp_path / "s"
    result = run_sweep(config, out, progress=False)
    assert result.total == 3 * (1 + 4 + 2)
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    soft = summary[summary["decoder"] == "soft"]
    assert (soft["budget_end_rate"] == 1.0).all() and (soft["think_steps"] == 6).all()
    assert sorted(summary.loc[summary["decoder"] == "gumbel", "variant"]) == ["tau=0.1", "tau=1.0"]
    html = (out / "report.html").read_text()
    assert "Accuracy vs each variant" in html and "Soft thinking" in html
    # Nothing mixes contexts: no divergences, no first attempts.
    assert "figure(s) left out" in html and "Divergences vs lambda" not in html and "Fixes and breaks" not in html
    again = run_sweep(parse_config(data), out, progress=False, write_report=False)
    assert again.new == 0
