"""Thinking models: chat template options (Qwen3's enable_thinking), the thinking recorded apart
from the answer that extraction reads, unclosed thinking's verdict, budget forcing for any decoder,
soft thinking switching at `</think>`, and ReDuMix's reflective context from a thinking first attempt.
The model is `tests.helpers.thinking_model` (`<think>`/`</think>` tokens, a template that opens the
thinking in the generation prompt); the marker-less cases run on `tests.tiny`."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from envs import get_env
from envs.answer import extract_answer, extract_answer_flexible, split_thinking, with_open_thinking
from harness.engine import lockstep
from harness.engine.prompts import (
    chat_template_options,
    encode,
    parse_chat_template_options,
    render_chat,
    unread_chat_template_options,
)
from harness.methods import Generation, get_method
from harness.runs.runner import RunSpec, run
from harness.runs.spec_identity import same_identity
from harness.runs.sweep_config import ConfigError, parse_config
from tests.helpers.thinking_model import thinking_model
from tests.tiny import tiny_model

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def thinker():
    return thinking_model()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def env():
    return get_env("basic_arithmetic", **EASY)


def _run(loaded, out, decoder="greedy", config=None, n=3, max_new_tokens=16, **spec) -> list[dict]:
    run(RunSpec(env="basic_arithmetic", decoder=decoder, n=n, seed=0, env_config=dict(EASY),
                decoder_config=dict(config or {}), max_new_tokens=max_new_tokens, batch_size=2, stop=[], **spec),
        out, loaded=loaded, progress=False)
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


# -- chat template options -------------------------------------------------------------------------------

def test_the_option_reaches_the_chat_template(thinker):
    turn = [{"role": "user", "content": "2 + 3?"}]
    assert render_chat(thinker.tokenizer, turn).endswith("assistant: <think>")
    with chat_template_options({"enable_thinking": False}):
        assert render_chat(thinker.tokenizer, turn).endswith("assistant: <think></think>")
    assert render_chat(thinker.tokenizer, turn).endswith("assistant: <think>")  # only inside the block


def test_option_values_read_as_json_and_bad_items_are_refused_naming_the_flag():
    assert parse_chat_template_options(["enable_thinking=false", "depth=3", "style=terse"]) == \
        {"enable_thinking": False, "depth": 3, "style": "terse"}
    assert parse_chat_template_options(None) is None
    with pytest.raises(ValueError, match="--chat-template-option 'enable_thinking' is not KEY=VALUE"):
        parse_chat_template_options(["enable_thinking"])
    with pytest.raises(ValueError, match="gives enable_thinking twice"):
        parse_chat_template_options(["enable_thinking=false", "enable_thinking=true"])


def test_a_template_that_never_reads_an_option_is_named(thinker, tiny):
    assert unread_chat_template_options(thinker.tokenizer, {"enable_thinking": False}) == []
    assert unread_chat_template_options(tiny.tokenizer, {"enable_thinking": False}) == ["enable_thinking"]


def test_records_hold_the_prompt_as_rendered_with_the_option(thinker, tmp_path):
    off = _run(thinker, tmp_path / "off", chat_template_options={"enable_thinking": False})
    on = _run(thinker, tmp_path / "on")
    assert all(r["prompt"].endswith("<think></think>") for r in off)
    assert all(r["prompt"].endswith("<think>") for r in on)
    spec = json.loads((tmp_path / "off" / "spec.json").read_text())
    assert spec["run"]["chat_template_options"] == {"enable_thinking": False}
    # The same command resumes; another option value is another run.
    assert len(_run(thinker, tmp_path / "off", chat_template_options={"enable_thinking": False})) == 3
    with pytest.raises(ValueError, match="chat_template_options"):
        _run(thinker, tmp_path / "off", chat_template_options={"enable_thinking": True})


def test_a_sweep_config_names_them_at_the_top_and_is_identified_as_before_without(tiny_model_dir):
    data = {"models": [str(tiny_model_dir)], "envs": [{"name": "basic_arithmetic", "n": 2}],
            "decoders": [{"name": "greedy"}], "max_new_tokens": 16}
    plain = parse_config(data)
    assert plain.chat_template_options is None and plain.think_budget is None
    before = plain.resolved()
    before.pop("chat_template_options"), before.pop("think_budget")  # a spec.json from before the settings
    assert same_identity(before, plain.resolved())
    thinking = parse_config(data | {"chat_template_options": {"enable_thinking": True}, "think_budget": 8})
    assert thinking.chat_template_options == {"enable_thinking": True} and thinking.think_budget == 8
    assert not same_identity(before, thinking.resolved())
    with pytest.raises(ConfigError, match=r"think_budget \(=16\) leaves no room for the answer"):
        parse_config(data | {"think_budget": 16})
    with pytest.raises(ConfigError, match=r"chat_template_options.enable_thinking \(=\[1\]\) must be"):
        parse_config(data | {"chat_template_options": {"enable_thinking": [1]}})


# -- the thinking apart from the answer ----------------------------------------------------------------

def test_extraction_reads_only_what_follows_the_thinking(env):
    problem = env.problems(1, 0)[0]
    wrong = "999" if problem.gold != "999" else "998"
    text = f"<think>maybe <answer>{wrong}</answer> or {wrong}</think>\n<answer>{problem.gold}</answer>"
    assert extract_answer(text) == problem.gold and env.verify(problem, text).correct
    assert extract_answer_flexible(f"<think>it is {wrong}</think> so it is {problem.gold}") == problem.gold
    # A prompt that opened <think> leaves it out of the completion; it is put back before grading.
    opened = with_open_thinking("assistant: <think>", f"the answer is {wrong}")
    assert split_thinking(opened).closed is False and extract_answer_flexible(opened) is None
    assert split_thinking(f"<answer>{wrong}</answer>") is None  # no thinking: read whole, as before
    assert with_open_thinking("assistant: <think></think>", "x") == "x"


def test_a_completion_that_never_closes_its_thinking_scores_0_and_says_why(thinker, tmp_path):
    records = _run(thinker, tmp_path / "r", max_new_tokens=10)
    for r in records:
        assert "</think>" not in r["completion"] and r["finish_reason"] == "length"
        assert r["thinking_closed"] is False and r["thinking"] == r["completion"].strip()
        assert r["thinking_tokens"] == r["new_tokens"] == 10
        assert (r["answer"], r["score"], r["correct"], r["format_ok"]) == (None, 0.0, False, False)
        assert "thinking never closed with </think> (finish_reason length)" in r["score_error"]


def test_records_without_thinking_carry_no_thinking_fields(thinker, tmp_path):
    for r in _run(thinker, tmp_path / "r", chat_template_options={"enable_thinking": False}):
        assert not {"thinking", "thinking_tokens", "thinking_closed", "think_end"} & r.keys()


# -- budget forcing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("decoder, config", [("greedy", {}), ("sample", {"temperature": "1.0"}),
                                             ("self_consistency", {"n": "2", "temperature": "1.0"})])
def test_the_budget_forces_the_end_of_thinking_for_any_decoder(thinker, env, tmp_path, decoder, config):
    records = _run(thinker, tmp_path / "r", decoder=decoder, config=config, max_new_tokens=14, think_budget=5)
    close = thinker.tokenizer.convert_tokens_to_ids("</think>")
    for r in records:
        assert (r["think_end"], r["think_end_step"]) == ("budget", 5)
        assert r["thinking_closed"] is True and r["thinking_tokens"] == 5
        ids = thinker.tokenizer.encode(r["completion"], add_special_tokens=False)
        assert ids[5] == close  # the answer follows the forced marker
        problem = next(p for p in env.problems(3, 0) if p.problem_id == r["problem_id"])
        assert r["answer"] == env.verify(problem, r["completion"].split("</think>")[-1]).answer


def test_summaries_show_how_long_groups_thought_and_how_their_thinking_ended(thinker, tiny, tmp_path):
    from harness.analysis.report import analyse_folder

    _run(thinker, tmp_path / "budget", max_new_tokens=14, think_budget=5)
    _run(thinker, tmp_path / "unclosed", max_new_tokens=10)
    _run(tiny, tmp_path / "none", max_new_tokens=4)
    columns = ["thinking_tokens_mean", "unclosed_thinking_rate", "budget_end_rate"]
    (budget,), (unclosed,), (none,) = (analyse_folder(tmp_path / name).summary[columns].to_dict("records")
                                       for name in ("budget", "unclosed", "none"))
    assert budget == {"thinking_tokens_mean": 5.0, "unclosed_thinking_rate": 0.0, "budget_end_rate": 1.0}
    assert unclosed == {"thinking_tokens_mean": 10.0, "unclosed_thinking_rate": 1.0, "budget_end_rate": 0.0}
    assert all(value != value for value in none.values())  # NaN: nothing thought


def test_a_row_that_ends_its_thinking_itself_is_not_forced(thinker):
    close = thinker.tokenizer.convert_tokens_to_ids("</think>")
    prompt = encode(thinker.tokenizer, render_chat(thinker.tokenizer, [{"role": "user", "content": "hi"}]))
    from decoders import get_decoder

    with lockstep.think_budget(4):
        row = lockstep.decode(thinker, [[prompt]], get_decoder("greedy"), max_new_tokens=10, eos_token_ids=[],
                              force_tokens=lambda step, rows, ids: {0: close} if step == 2 else {})[0]
    assert row.thinking == {"think_end": "marker", "think_end_step": 2}
    assert row.token_ids.count(close) == 1


def test_without_a_thinking_marker_the_budget_forces_the_answer_tag(tiny, tmp_path):
    for r in _run(tiny, tmp_path / "r", max_new_tokens=20, think_budget=4):
        assert (r["think_end"], r["think_end_step"]) == ("budget", 4) or r["finish_reason"] == "eos"
        if r["think_end"] == "budget":
            assert r["completion"][4:].startswith("<answer>")  # one token per character
        assert "thinking" not in r  # no </think>: the completion is read whole, as before


def test_the_budget_is_checked_against_max_new_tokens():
    with pytest.raises(ValueError, match=r"--think-budget \(=16\) leaves no room for the answer"):
        RunSpec(env="basic_arithmetic", max_new_tokens=16, think_budget=16)
    with pytest.raises(ValueError, match=r"--think-budget \(=-1\) must be a whole number"):
        RunSpec(env="basic_arithmetic", think_budget=-1)
    assert RunSpec(env="basic_arithmetic", think_budget=0).think_budget is None


# -- soft thinking ---------------------------------------------------------------------------------------

def _solve(loaded, env, name, config, n=4, max_new_tokens=24, budget=None):
    method = get_method(name, **config)
    with lockstep.think_budget(budget):
        return method.solve(env, {"policy": loaded}, env.problems(n, 0),
                            Generation(max_new_tokens=max_new_tokens, stop=(), seed=0, save_steps=True))


def test_soft_thinking_switches_to_discrete_answering_at_the_marker(thinker, env):
    close = thinker.tokenizer.convert_tokens_to_ids("</think>")
    for attempt in _solve(thinker, env, "soft", {"temperature": "1.0"}, max_new_tokens=14, budget=5):
        assert (attempt.extras["think_end"], attempt.extras["think_end_step"]) == ("budget", 5)
        assert attempt.extras["think_steps"] == 5 and attempt.row.token_ids[5] == close
        assert attempt.steps["soft"] == [1.0] * 5 + [0.0] * (len(attempt.row.token_ids) - 5)
        assert attempt.row.thinking is None  # the decoder ended its own thinking; the engine forced nothing


def test_on_a_thinking_model_eos_while_thinking_forces_the_marker(thinker, env):
    eager = copy.deepcopy(thinker)  # a model that wants to stop at once
    eos = eager.tokenizer.eos_token_id
    with torch.no_grad():
        eager.model.lm_head.bias[eos] = 30.0
    close = eager.tokenizer.convert_tokens_to_ids("</think>")
    for attempt in _solve(eager, env, "soft", {"max_topk": "1"}, n=2, max_new_tokens=8):
        # The EOS ends the thinking, not the row: the marker takes its place and the answer follows.
        assert attempt.row.token_ids == [close, eos]
        assert (attempt.extras["think_end"], attempt.extras["think_end_step"]) == ("eos", 0)


def test_without_a_marker_a_one_hot_soft_token_is_greedy_token_for_token(tiny, env):
    greedy = _solve(tiny, env, "greedy", {})
    soft = _solve(tiny, env, "soft", {"max_topk": "1"})
    eos = tiny.tokenizer.eos_token_id
    assert any(g.row.token_ids[-1] == eos for g in greedy)  # the EOS case is exercised
    for g, s in zip(greedy, soft, strict=True):
        assert s.row.token_ids == g.row.token_ids and s.row.finish_reason == g.row.finish_reason
        if g.row.finish_reason == "eos" and "<answer>" not in g.row.text:
            assert s.extras["think_end"] == "eos"


class _GradedTexts:
    """An env that keeps every text it grades (the texts a method's answers are extracted from)."""

    def __init__(self, env):
        self.env, self.graded = env, []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def verify(self, problem, completion):
        self.graded.append(completion)
        return self.env.verify(problem, completion)


@pytest.mark.parametrize("name, config, roles", [
    ("self_consistency", {"n": "3", "temperature": "1.0"}, ("policy",)),
    ("best_of_n", {"n": "2", "temperature": "1.0"}, ("policy",)),
    ("dera", {"lam": "0.5", "aligned": "other"}, ("ref", "aligned")),
])
def test_methods_of_several_answers_grade_each_as_thinking_when_the_template_opened_it(thinker, env, name, config,
                                                                                       roles):
    graded = _GradedTexts(env)
    method = get_method(name, **config)
    models = dict.fromkeys(roles, thinker)
    attempts = method.solve(graded, models, env.problems(2, 0), Generation(max_new_tokens=6, stop=(), seed=0))
    assert attempts and graded.graded
    # The template opened <think> and no sample closed it: every text graded reads as unclosed thinking,
    # so nothing in it counts as an answer.
    assert all(split_thinking(text) is not None and not split_thinking(text).closed for text in graded.graded)
    assert all(a.verdict.answer is None for a in attempts)


# -- ReDuMix ---------------------------------------------------------------------------------------------

REDUMIX = {"lam": "0,1", "feedback": "ground_truth", "reflect_prompt": "Reflect.", "redo_prompt": "Redo.",
           "reflection_max_new_tokens": "6", "summary_max_new_tokens": "10"}


def test_redumix_x2_holds_the_whole_thinking_by_default(thinker, tmp_path):
    records = _run(thinker, tmp_path / "r", decoder="redumix", config=REDUMIX, n=2, max_new_tokens=14,
                   think_budget=5)
    for r in records:
        first = split_thinking(with_open_thinking(r["contexts"][0], r["stage1_completion"]))
        assert first.closed and first.text
        x2 = r["contexts"][1]
        # The template drops an earlier turn's thinking, so it is written as plain text before the answer.
        assert first.text in x2 and "stage1_thinking_summary" not in r
        assert r["thinking_closed"] is True and r["think_end"] == "budget"


def test_redumix_can_hold_a_summary_of_the_thinking_instead(thinker, tmp_path):
    config = REDUMIX | {"stage1_thinking": "summary"}
    records = _run(thinker, tmp_path / "r", decoder="redumix", config=config, n=2, max_new_tokens=14, think_budget=5)
    for r in records:
        first = split_thinking(with_open_thinking(r["contexts"][0], r["stage1_completion"]))
        x2 = r["contexts"][1]
        assert "[Summary of earlier reasoning: " + r["stage1_thinking_summary"] in x2
        assert first.text not in x2
    with pytest.raises(ValueError, match="Unknown stage1_thinking 'sumary'. Did you mean: summary"):
        get_method("redumix", stage1_thinking="sumary")


def test_a_sweep_forces_its_budget_and_names_options_its_model_never_reads(tiny_model_dir, tmp_path, capsys):
    from harness.runs.sweep import run_sweep

    data = {"models": [str(tiny_model_dir)], "max_new_tokens": 16, "batch_size": 2, "dtype": "float32",
            "envs": [{"name": "basic_arithmetic", "n": 2, "config": dict(EASY)}], "decoders": [{"name": "greedy"}],
            "chat_template_options": {"enable_thinking": False}, "think_budget": 3}
    run_sweep(parse_config(data), tmp_path / "s", progress=False, write_report=False)
    records = [json.loads(line) for line in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert all(r["think_end"] == "budget" or r["finish_reason"] == "eos" for r in records)
    assert "never reads enable_thinking" in capsys.readouterr().err


# -- lm-eval ---------------------------------------------------------------------------------------------

def test_lm_eval_takes_template_options_and_a_budget_and_answers_as_redumix_run(thinker, env, tmp_path):
    from lm_eval.api.instance import Instance

    from harness.lmeval.model import RedumixLM

    records = _run(thinker, tmp_path / "r", max_new_tokens=12, think_budget=5,
                   chat_template_options={"enable_thinking": True})
    lm = RedumixLM(loaded=thinker, max_gen_toks=12, think_budget=5, batch_size=2,
                   **{"chat_template.enable_thinking": "true"})
    assert lm.chat_template_options == {"enable_thinking": True}
    assert lm.get_model_info()["redumix"]["think_budget"] == 5
    prompts = [lm.apply_chat_template([{"role": "user", "content": env.user_prompt(p)}]) for p in env.problems(3, 0)]
    assert prompts == [r["prompt"] for r in records]
    requests = [Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": 12}), i, ("t", i, 1))
                for i, prompt in enumerate(prompts)]
    assert lm.generate_until(requests) == [r["completion"] for r in records]
    assert all(r["think_end"] == "budget" for r in records)
    off = RedumixLM(loaded=thinker, **{"chat_template.enable_thinking": False})
    assert off.apply_chat_template([{"role": "user", "content": "Hi"}]).endswith("<think></think>")
    with pytest.raises(ValueError, match=r"think_budget \(=12\) leaves no room for the answer"):
        RedumixLM(loaded=thinker, max_gen_toks=12, think_budget=12)
    with pytest.raises(ValueError, match=r"model_args chat_template.enable_thinking \(=\[1\]\) must be true, false"):
        RedumixLM(loaded=thinker, **{"chat_template.enable_thinking": [1]})
