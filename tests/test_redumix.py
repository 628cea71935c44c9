"""ReDuMix: the decoder config and the four-stage pipeline on the tiny model."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from decoders import get_decoder
from decoders.redumix import compress
from decoders.redumix import stages as redumix_pipeline
from envs import get_env
from harness.cli import main
from harness.engine import lockstep
from harness.engine.prompts import encode
from harness.runs.runner import RunSpec, run
from tests.tiny import tiny_model

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
# Short stage prompts keep x2 inside the tiny model's 512-position window (its tokens are characters).
SHORT = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": "8"}
MAX_NEW = 10


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _spec(lam, **extra):
    config = {"lam": lam, **SHORT, **extra}
    return RunSpec(env="basic_arithmetic", decoder="redumix", n=3, seed=0, model="tiny", env_config=dict(EASY),
                   decoder_config=config, max_new_tokens=MAX_NEW, batch_size=2)


def _records(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _greedy(tiny, text):
    row = lockstep.decode(tiny, [[encode(tiny.tokenizer, text)]], get_decoder("greedy"),
                        max_new_tokens=MAX_NEW, stop_strings=["</answer>"])[0]
    return row.text


@pytest.fixture(scope="module")
def sweep(tiny, tmp_path_factory):
    """One run over lam = 0, 0.5, 1, counting how many problems went through stage 1."""
    out = tmp_path_factory.mktemp("redumix") / "run"
    calls = []
    original = redumix_pipeline._stages_1_to_3

    def counting(env, loaded, decoder, problems, *args, **kwargs):
        before = len(args[-1].entries)
        stages = original(env, loaded, decoder, problems, *args, **kwargs)
        calls.append(len(args[-1].entries) - before)
        return stages

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(redumix_pipeline, "_stages_1_to_3", counting)
        summary = run(_spec("0,0.5,1"), out, loaded=tiny, progress=False)
    return out, summary, calls


def test_sweep_writes_one_record_per_problem_and_lambda(sweep):
    out, summary, calls = sweep
    records = _records(out)
    assert sorted((r["problem_id"], r["lambda"]) for r in records) == sorted(
        (f"basic_arithmetic-s0-{i}", lam) for i in range(3) for lam in (0.0, 0.5, 1.0)
    )
    assert summary.n == 9
    assert sum(calls) == 3  # stage 1-3 ran once per problem, shared by the three lambdas
    shared = ("stage1_completion", "stage1_answer", "stage1_correct", "feedback", "reflection", "contexts",
              "feedback_policy", "stage1_s", "feedback_s", "reflection_s")
    for pid in {r["problem_id"] for r in records}:
        group = [r for r in records if r["problem_id"] == pid]
        for name in shared:
            assert len({json.dumps(r[name]) for r in group}) == 1, name
    for r in records:
        assert r["feedback_policy"] == "ground_truth"
        assert r["compressed"] is False and r["tokens_cut"] == 0
        assert r["decoder_config"]["lam"] == r["lambda"]
        assert r["correct"] == (r["score"] == 1.0)
        assert r["contexts"][0] == r["prompt"]
        assert r["feedback"] in r["contexts"][1] and r["reflection"] in r["contexts"][1]
        assert all(r[k] >= 0 for k in ("stage1_s", "feedback_s", "reflection_s", "mix_s"))


def test_lambda_limits_equal_greedy_decoding_of_each_context(sweep, tiny):
    for r in _records(sweep[0]):
        x, x2 = r["contexts"]
        if r["lambda"] == 1.0:
            assert r["completion"] == _greedy(tiny, x)
            assert r["completion"] == r["stage1_completion"]  # stage 4 at lam=1 redoes stage 1
        elif r["lambda"] == 0.0:
            assert r["completion"] == _greedy(tiny, x2)


def test_statistics_are_finite_and_consistent(sweep):
    for r in _records(sweep[0]):
        for name in redumix_pipeline.STAT_NAMES:
            assert math.isfinite(r[name]), name
        assert 0.0 <= r["top1_agree"] <= 1.0
        assert "steps" not in r  # per-step arrays only on request
        assert 0.0 <= r["js_p1_p2"] <= math.log(2) + 1e-6
        assert r["kl_p1_p2"] >= -1e-6 and r["entropy_mix"] >= -1e-6
        if r["lambda"] == 1.0:
            assert abs(r["kl_mix_p1"]) < 1e-6
        if r["lambda"] == 0.0:
            assert abs(r["kl_mix_p2"]) < 1e-6


def test_save_steps_keeps_arrays_whose_means_are_the_record_statistics(tiny, tmp_path):
    spec = dataclasses.replace(_spec("0,0.5"), n=2, save_steps=True)
    run(spec, tmp_path / "run", loaded=tiny, progress=False)
    for r in _records(tmp_path / "run"):
        steps = r["steps"]
        assert len(steps["token_ids"]) == r["new_tokens"]
        for name in redumix_pipeline.STAT_NAMES:
            assert len(steps[name]) == r["new_tokens"]
            assert math.isclose(sum(steps[name]) / len(steps[name]), r[name], rel_tol=1e-4, abs_tol=1e-5), name
    greedy = RunSpec(env="basic_arithmetic", n=2, model="tiny", env_config=dict(EASY), max_new_tokens=MAX_NEW,
                     save_steps=True)
    run(greedy, tmp_path / "greedy", loaded=tiny, progress=False)
    for r in _records(tmp_path / "greedy"):
        assert len(r["steps"]["token_ids"]) == len(r["steps"]["logprob"]) == r["new_tokens"]
        assert all(lp <= 0.0 for lp in r["steps"]["logprob"])


def test_resume_fills_only_missing_lambdas(sweep, tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    src = sweep[0]
    (out / "spec.json").write_text((src / "spec.json").read_text())
    kept = [line for line in (src / "samples.jsonl").read_text().splitlines() if '"lambda": 0.5' not in line]
    (out / "samples.jsonl").write_text("\n".join(kept) + "\n")
    summary = run(_spec("0,0.5,1"), out, loaded=tiny, progress=False)
    assert summary.n == 3 and summary.skipped == 6
    records = _records(out)
    assert len(records) == 9
    assert len({(r["problem_id"], r["lambda"]) for r in records}) == 9


@pytest.mark.parametrize(("value", "message"), [
    ("1.5", "lam (=1.5) must be in [0, 1]"),
    ("-0.1", "lam (=-0.1) must be in [0, 1]"),
    ("0,2", "lam (=2.0) must be in [0, 1]"),
    ("", "lam (=()) is an empty list"),
    ("a,b", "lam (='a,b') is not a valid float or comma-separated list of floats"),
])
def test_bad_lambda_is_a_value_error_naming_it(value, message):
    with pytest.raises(ValueError) as err:
        get_decoder("redumix", lam=value)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="empty list"):
        get_decoder("redumix", lam=[])


def test_lambda_parsing_and_single_value_step():
    assert get_decoder("redumix", lam="0,0.5,1").lambdas == (0.0, 0.5, 1.0)
    single = get_decoder("redumix", lam="0.25")
    assert single.lam == 0.25 and single.lambdas == (0.25,) and single.num_streams == 2
    lp = torch.log_softmax(torch.randn(2, 3, 7, dtype=torch.float64), dim=-1)
    step = single.step(lp, [torch.Generator()] * 3)
    expected = torch.log_softmax(0.25 * lp[0] + 0.75 * lp[1], dim=-1)
    assert torch.allclose(step.logprobs, expected)
    assert torch.equal(step.token_ids, expected.argmax(-1))
    with pytest.raises(ValueError, match="several values"):
        get_decoder("redumix", lam="0,1").step(lp, [torch.Generator()] * 3)


def test_contexts_that_cannot_fit_the_budget_are_refused(tiny, sweep):
    env = get_env("basic_arithmetic", **EASY)
    x2 = next(r["contexts"][1] for r in _records(sweep[0]) if r["problem_id"] == "basic_arithmetic-s0-0")
    x2_len = len(encode(tiny.tokenizer, x2))
    # A first attempt of MAX_NEW tokens is too short to summarise into room for either budget.
    for budget in (200, x2_len + MAX_NEW - 1):
        decoder = get_decoder("redumix", lam="0.5", context_budget=str(budget), **SHORT)
        with pytest.raises(ValueError, match=rf"basic_arithmetic-s0-0.*needs \d+ tokens.*budget is {budget}"):
            redumix_pipeline.solve_batch(env, tiny, decoder, env.problems(1, 0), max_new_tokens=MAX_NEW,
                                         stop=["</answer>"], seed=0)


def test_long_first_attempts_are_summarised_to_fit_the_budget(tiny):
    env = get_env("basic_arithmetic", **EASY)
    problems = env.problems(2, 0)
    config = {**SHORT, "summary_prompt": "Sum:", "summary_max_new_tokens": "6"}
    long_new = 80

    def solve(**extra):
        decoder = get_decoder("redumix", lam="0.5", **config, **extra)
        return redumix_pipeline.solve_batch(env, tiny, decoder, problems, max_new_tokens=long_new, stop=[], seed=0)

    full = solve()
    assert not any(r.stage.compressed for r in full)
    longest = max(len(encode(tiny.tokenizer, r.stage.x2)) for r in full)
    budget = longest + long_new - 10
    fitted = solve(context_budget=str(budget))
    for before, after in zip(full, fitted, strict=True):
        stage = after.stage
        assert stage.stage1_completion == before.stage.stage1_completion  # the record keeps y1 whole
        assert len(encode(tiny.tokenizer, stage.x2)) + long_new <= budget
        if stage.compressed:
            assert stage.tokens_cut >= 10
            y1 = stage.stage1_completion
            assert compress.SUMMARY_PREFIX in stage.x2 and y1[-10:] in stage.x2 and y1 not in stage.x2
    assert any(r.stage.compressed for r in fitted)


def test_lambdas_share_one_stage4_batch_unless_limited(tiny, monkeypatch):
    env = get_env("basic_arithmetic", **EASY)
    problems = env.problems(2, 0)
    calls = []
    original = redumix_pipeline._stage_4

    def counting(*args):
        calls.append(sorted({lam for _, lam in args[5]}))
        return original(*args)

    monkeypatch.setattr(redumix_pipeline, "_stage_4", counting)
    outputs = {}
    for per_batch in ("0", "1"):
        decoder = get_decoder("redumix", lam="0,0.5,1", lambdas_per_batch=per_batch, **SHORT)
        results = redumix_pipeline.solve_batch(env, tiny, decoder, problems, max_new_tokens=MAX_NEW,
                                               stop=["</answer>"], seed=0)
        outputs[per_batch] = {(r.problem.problem_id, r.lam): r.row.text for r in results}
    assert calls == [[0.0, 0.5, 1.0], [0.0], [0.5], [1.0]]
    assert outputs["0"] == outputs["1"] and len(outputs["0"]) == 6


def test_first_attempt_is_greedy_by_default_and_sampled_on_request(tiny):
    env = get_env("basic_arithmetic", **EASY)
    problems = env.problems(3, 0)

    def first_attempts(seed, **extra):
        decoder = get_decoder("redumix", lam="1", **SHORT, **extra)
        results = redumix_pipeline.solve_batch(env, tiny, decoder, problems, max_new_tokens=MAX_NEW, stop=[],
                                               seed=seed)
        return [r.stage.stage1_completion for r in results]

    x_texts = [redumix_pipeline.render_chat(tiny.tokenizer, [{"role": "user", "content": env.user_prompt(p)}])
               for p in problems]
    greedy = [lockstep.decode(tiny, [[encode(tiny.tokenizer, x)]], get_decoder("greedy"),
                              max_new_tokens=MAX_NEW)[0].text for x in x_texts]
    assert first_attempts(0) == greedy == first_attempts(1)
    sampled = {"stage1_sample": "true", "stage1_temperature": "2.0"}
    assert first_attempts(0, **sampled) == first_attempts(0, **sampled)  # seeded
    assert first_attempts(0, **sampled) != first_attempts(1, **sampled)
    assert first_attempts(0, **sampled) != greedy
    with pytest.raises(ValueError, match="stage1_temperature"):
        get_decoder("redumix", stage1_sample="true", stage1_temperature="0")


def test_redo_prompt_can_restate_the_question(tiny):
    env = get_env("basic_arithmetic", **EASY)
    problem = env.problems(1, 0)[0]
    decoder = get_decoder("redumix", lam="0.5", **{**SHORT, "redo_prompt": "Again: {question}"})
    [result] = redumix_pipeline.solve_batch(env, tiny, decoder, [problem], max_new_tokens=MAX_NEW, stop=[], seed=0)
    x2 = result.stage.x2
    assert f"Again: {env.user_prompt(problem)}" in x2 and "{question}" not in x2


def test_plan_cut_covers_the_excess_and_the_summary():
    assert compress.plan_cut(needed=90, budget=100, y1_tokens=50, summary_tokens=10).cut == 0
    plan = compress.plan_cut(needed=130, budget=100, y1_tokens=200, summary_tokens=10)
    assert plan.cut >= 30 + 10
    with pytest.raises(ValueError, match="needs 130 tokens but the context budget is 100"):
        compress.plan_cut(needed=130, budget=100, y1_tokens=20, summary_tokens=10)


def _cli(tiny_model_dir, out, *extra):
    return main(["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--n", "2", "--seed", "0",
                 "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out), "--threads", "1",
                 "--env-config", "min_terms=2,max_terms=2,min_digits=1,max_digits=1",
                 "--decoder", "redumix", *extra])


def test_cli_unknown_feedback_policy_fails_before_decoding(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "never"
    assert _cli(tiny_model_dir, out, "--feedback", "ground_truht") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "Unknown feedback policy 'ground_truht'. Did you mean: ground_truth?" in err
    assert not (out / "samples.jsonl").exists()


def test_cli_runs_a_lambda_sweep(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    config = ["--decoder-config", "lam=0,1,reflect_prompt=Reflect.,redo_prompt=Redo.,reflection_max_new_tokens=4"]
    assert _cli(tiny_model_dir, out, "--feedback", "binary", *config) == 0
    records = _records(out)
    assert sorted((r["problem_id"], r["lambda"]) for r in records) == sorted(
        (f"basic_arithmetic-s0-{i}", lam) for i in range(2) for lam in (0.0, 1.0)
    )
    assert {r["feedback_policy"] for r in records} == {"binary"}
    printed = capsys.readouterr().out
    assert "lambda=0: " in printed and "lambda=1: " in printed and "(4 records)" in printed
    first = sum(r["stage1_correct"] for r in records if r["lambda"] == 0.0)
    assert f"first attempts (stage 1): {first}/2 " in printed
    assert all(r["feedback"].startswith(("Your answer is", "Format error")) for r in records)
    spec = json.loads((out / "spec.json").read_text())
    assert spec["run"]["decoder_config"]["lam"] == [0.0, 1.0]


def test_cli_verifier_feedback_needs_an_env_with_a_verifier(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(type(get_env("basic_arithmetic")), "has_verifier", False)
    out = tmp_path / "never"
    assert _cli(tiny_model_dir, out, "--feedback", "verifier") == 2
    assert "needs an environment with a verifier" in capsys.readouterr().err.replace("\n", " ")
    assert not (out / "samples.jsonl").exists()
