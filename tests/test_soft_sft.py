"""`redumix distill --objective soft-sft` on the tiny model: the soft-fed forward against plain
teacher forcing and against its formula, the guidance schedule, resuming, the environment
source, and the refusals of bad flags."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import TrainerCallback

from decoders.sampling import filter_logprobs
from harness.cli import main
from harness.distill import DistillOptions, EnvSource, distill
from harness.distill.env_answers import load_env_answers
from harness.distill.guidance_schedule import GuidanceSchedule
from harness.distill.soft_sft import (
    SoftInputs,
    SoftSftCollator,
    soft_cross_entropy,
    soft_forward,
    soft_sft_examples,
)
from harness.engine.prompts import render_chat
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWERS = [("What is 2+3?", "<answer>5</answer>"), ("Spell cat.", "c-a-t, so <answer>cat</answer>"),
           ("Name a colour.", "<answer>red</answer>"), ("Count to 3.", "1 2 3 <answer>3</answer>")]
# Every filter at work: 20 of the tiny vocabulary's ~100 tokens, then top-p and min-p, at most 5 mixed.
FILTER = SoftInputs(temperature=0.7, top_k=20, top_p=0.9, min_p=0.01, max_topk=5)
FAST = {"objective": "soft-sft", "batch_size": 2, "lr": 1e-2, "save_steps": 1000}


def _batch(loaded, answers=ANSWERS):
    pairs = [{"user_prompt": q, "chosen": a} for q, a in answers]
    examples, skipped = soft_sft_examples(loaded.tokenizer, pairs, 512)
    assert not skipped
    return examples, SoftSftCollator(loaded.tokenizer.pad_token_id)(examples)


def _teacher_forced_loss(model, examples):
    """Mean cross-entropy per answer token, each row read whole with its answer (no cache, no padding)."""
    total, count = 0.0, 0
    for e in examples:
        ids = torch.tensor([e.prompt_ids + e.target[:-1]])
        logits = model(input_ids=ids).logits[0, len(e.prompt_ids) - 1 :]
        total = total + F.cross_entropy(logits, torch.tensor(e.target), reduction="sum")
        count += len(e.target)
    return total / count


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, tiny_model_dir):
    tokenizer = tiny_model().tokenizer
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": render_chat(tokenizer, [{"role": "user", "content": q}]),
                                        "chosen": a, "model": str(tiny_model_dir)}) + "\n" for q, a in ANSWERS))
    return str(path)


# --- the soft-fed forward ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("soft", [FILTER, SoftInputs(clamp_gold=True), SoftInputs(gradient="flow")],
                         ids=["filtered", "clamped", "flowing"])
@pytest.mark.parametrize("step_by_step", [True, False], ids=["cached-steps", "one-pass"])
def test_at_alpha_1_loss_and_gradients_are_plain_teacher_forcing(soft, step_by_step):
    loaded = tiny_model()
    model = loaded.model.train()
    examples, batch = _batch(loaded)

    # Asking for the fed inputs keeps the step-by-step path, which alpha 1 otherwise skips.
    result = soft_forward(model, batch, 1.0, soft, keep_fed=step_by_step)
    assert (result.fed is not None) == step_by_step
    result.loss.backward()
    soft_grads = _grads(model)
    model.zero_grad()
    reference = _teacher_forced_loss(model, examples)
    reference.backward()
    plain_grads = _grads(model)

    assert result.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert soft_grads.keys() == plain_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(soft_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_distillation_held_at_alpha_1_starts_from_the_teacher_forced_loss(tmp_path, pairs_file):
    loaded = tiny_model()
    examples, _ = _batch(loaded)
    reference = _teacher_forced_loss(loaded.model, examples).item()
    summary = distill(pairs_file, tmp_path / "out", DistillOptions(
        objective="soft-sft", guidance_start=1.0, guidance_floor=1.0, batch_size=len(ANSWERS), max_steps=1, lr=1e-2))
    assert summary.first_loss == pytest.approx(reference, rel=1e-5)


def _expected_input(embedding, logits, gold, alpha, soft):
    """alpha * E[gold] + (1 - alpha) * (p @ E), p over the whole vocabulary: filtered with the
    sampling filter, cut to the `max_topk` most likely and renormalised."""
    p = filter_logprobs(torch.log_softmax(logits, -1), soft.temperature, soft.top_k, soft.top_p, soft.min_p).exp()
    top = torch.topk(p, soft.max_topk).indices
    p = torch.zeros_like(p).scatter(-1, top, p.gather(-1, top))
    p = p / p.sum()
    if soft.clamp_gold:
        alpha = max(0.0, (alpha - p[gold].item()) / (1.0 - p[gold].item()))
    return alpha * embedding(torch.tensor(gold)) + (1 - alpha) * (p @ embedding.weight)


@pytest.mark.parametrize("soft", [FILTER, SoftInputs(), SoftInputs(temperature=2.0, clamp_gold=True)],
                         ids=["filtered", "decoder-defaults", "clamped"])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_the_fed_embeddings_are_the_formula_over_the_embedding_layer(soft, alpha):
    loaded = tiny_model(init_std=0.5)
    model = loaded.model
    examples, batch = _batch(loaded, ANSWERS[1:2])
    with torch.no_grad():
        result = soft_forward(model, batch, alpha, soft, keep_fed=True)
        embedding = model.get_input_embeddings()
        prompt = embedding(batch["input_ids"])
        fed = torch.stack(result.fed, dim=1)  # (1, n - 1, d)
        # The whole sequence read at once from the fed embeddings gives the logits the cached steps gave.
        logits = model(inputs_embeds=torch.cat([prompt, fed], dim=1)).logits[0, prompt.shape[1] - 1 :]
    torch.testing.assert_close(result.logits[0], logits, rtol=1e-4, atol=1e-4)
    target = examples[0].target
    for t in range(len(target) - 1):
        expected = _expected_input(embedding, result.logits[0, t], target[t], alpha, soft)
        torch.testing.assert_close(fed[0, t], expected, rtol=1e-5, atol=1e-6, msg=f"position {t + 1}")
    # The model's own mixture took part: these inputs are no token's embedding.
    assert not torch.allclose(fed[0], embedding(torch.tensor(target[:-1])), atol=1e-3)


def test_the_gradient_through_p_is_stopped_or_flows():
    loaded = tiny_model(init_std=0.5)
    model = loaded.model.train()
    _, batch = _batch(loaded)
    grads = {}
    for mode in ("stop", "flow"):
        model.zero_grad()
        soft_forward(model, batch, 0.0, SoftInputs(gradient=mode)).loss.backward()
        grads[mode] = _grads(model)
    assert any(not torch.allclose(grads["stop"][k], grads["flow"][k]) for k in grads["stop"])


def test_clamping_keeps_the_models_own_p_where_it_already_gives_the_gold_token_alpha():
    loaded = tiny_model(init_std=0.5)
    _, batch = _batch(loaded)
    with torch.no_grad():
        mixed = soft_forward(loaded.model, batch, 0.5, SoftInputs())
        clamped = soft_forward(loaded.model, batch, 0.5, SoftInputs(clamp_gold=True))
    fed = batch["target_mask"][:, 1:]
    # Mixing gives the gold token alpha + (1 - alpha) * p_gold; clamping exactly max(alpha, p_gold).
    assert bool((mixed.gold_weight[fed] >= 0.5 - 1e-6).all()) and bool((clamped.gold_weight[fed] >= 0.5 - 1e-6).all())
    assert float(clamped.gold_weight[fed].mean()) < float(mixed.gold_weight[fed].mean())


def test_soft_cross_entropy_at_alpha_1_is_the_teacher_forced_cross_entropy():
    loaded = tiny_model()
    examples, _ = _batch(loaded)
    with torch.no_grad():
        reference = _teacher_forced_loss(loaded.model, examples).item()
    assert soft_cross_entropy(loaded.model, examples, 0, 1.0, SoftInputs(), batch_size=3) == pytest.approx(
        reference, rel=1e-5)
    assert soft_cross_entropy(loaded.model, examples, 0, 0.0, SoftInputs(), batch_size=3) != pytest.approx(
        reference, rel=1e-3)


# --- the guidance schedule --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_the_schedule_falls_from_start_to_its_floor_at_the_configured_step(shape):
    schedule = GuidanceSchedule(start=0.9, floor=0.2, warmup_steps=6, shape=shape)
    alphas = [schedule.alpha(step) for step in range(10)]
    assert alphas[0] == pytest.approx(0.9) and alphas[5] > 0.2 and alphas[6:] == [0.2] * 4
    assert all(a >= b for a, b in zip(alphas, alphas[1:], strict=False))
    halfway = schedule.alpha(3)
    assert halfway == pytest.approx(0.55)  # both shapes pass the midpoint halfway
    quarter = 0.9 - 0.7 * (0.25 if shape == "linear" else (1 - math.cos(math.pi / 4)) / 2)
    assert schedule.alpha(1.5) == pytest.approx(quarter)
    assert GuidanceSchedule(start=1.0, floor=0.5, warmup_steps=0).alpha(0) == 0.5


def _log(out) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "training_log.csv").read_text())))


def test_training_follows_the_schedule_and_logs_it(tmp_path, pairs_file):
    distill(pairs_file, tmp_path / "out", DistillOptions(max_steps=5, guidance_start=1.0, guidance_floor=0.25,
                                                         guidance_warmup=3, **FAST))
    rows = _log(tmp_path / "out")
    assert [float(r["guidance_alpha"]) for r in rows] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.25])
    assert all(float(r["gold_weight"]) >= float(r["guidance_alpha"]) - 1e-6 for r in rows)
    assert rows[0]["gold_kept"] == "" and all(0 <= float(r["gold_kept"]) <= 1 for r in rows[1:])
    config = json.loads((tmp_path / "out" / "distill_config.json").read_text())
    assert config["guidance"] == {"start": 1.0, "floor": 0.25, "warmup_steps": 3, "shape": "linear"}
    assert config["soft_inputs"] == {"temperature": 0.6, "top_k": 30, "top_p": 0.95, "min_p": 0.001, "max_topk": 10,
                                     "clamp_gold": False, "gradient": "stop"}


def test_the_warm_up_defaults_to_half_of_the_run(tmp_path, pairs_file):
    distill(pairs_file, tmp_path / "out", DistillOptions(max_steps=4, **FAST))
    assert [float(r["guidance_alpha"]) for r in _log(tmp_path / "out")] == [1.0, 0.5, 0.0, 0.0]
    assert json.loads((tmp_path / "out" / "distill_config.json").read_text())["guidance"]["warmup_steps"] == 2


# --- training: resuming, seeds, LoRA, the environment source ----------------------------------------------------

class _InterruptAfterSaving(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_an_interrupted_soft_sft_resumes_to_the_same_weights(tmp_path, pairs_file):
    options = DistillOptions(objective="soft-sft", max_steps=5, batch_size=2, grad_accum=2, lr=1e-2, save_steps=2,
                             seed=5, guidance_warmup=4, guidance_schedule="cosine", clamp_gold=True)
    distill(pairs_file, tmp_path / "whole", options)
    with pytest.raises(KeyboardInterrupt):
        distill(pairs_file, tmp_path / "cut", options, callbacks=[_InterruptAfterSaving(2)])
    with pytest.raises(ValueError, match=r"different distillation \(guidance_floor: 0.0 there, 0.5 now\)"):
        distill(pairs_file, tmp_path / "cut", DistillOptions(**{**options.__dict__, "guidance_floor": 0.5}))
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = distill(pairs_file, tmp_path / "cut", options)
    assert resumed.resumed_from == 2 and resumed.steps == 5
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log(tmp_path / "cut") == _log(tmp_path / "whole")


def test_same_seed_same_weights(tmp_path, pairs_file):
    for name in "ab":
        distill(pairs_file, tmp_path / name, DistillOptions(max_steps=3, seed=2, **FAST))
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_soft_sft_is_merged_into_a_plain_model(tmp_path, pairs_file, tiny_model_dir):
    distill(pairs_file, tmp_path / "out", DistillOptions(lora=True, lora_r=4, max_steps=2, **FAST))
    trained, base = load_file(tmp_path / "out" / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert trained.keys() == base.keys() and not all(torch.equal(trained[k], base[k]) for k in base)


def test_an_environments_gold_answers_are_the_answers(tmp_path, tiny_model_dir, capsys):
    source = EnvSource(env="basic_arithmetic", seeds=(3, 4), n=5)
    pairs = load_env_answers(source)
    assert len(pairs.pairs) == 10 and pairs.kind == "env"
    assert [p["problem_id"] for p in pairs.pairs[:2]] == ["basic_arithmetic-s3-0", "basic_arithmetic-s3-1"]
    assert all(p["chosen"].startswith("<answer>") and p["chosen"].endswith("</answer>") for p in pairs.pairs)
    assert load_env_answers(source).digest == pairs.digest != load_env_answers(EnvSource("basic_arithmetic")).digest

    out = tmp_path / "out"
    assert main(["distill", "--objective", "soft-sft", "--env", "basic_arithmetic", "--env-seed", "3",
                 "--env-seed", "4", "--n", "5", "--model", str(tiny_model_dir), "--out", str(out),
                 "--max-steps", "2", "--lr", "1e-2"]) == 0
    assert "on 10 pairs: 2 steps" in capsys.readouterr().out
    config = json.loads((out / "distill_config.json").read_text())
    assert config["source"]["kind"] == "env" and config["source"]["env"]["seeds"] == [3, 4]
    assert config["training"]["source"] == "env basic_arithmetic, seeds [3, 4], 5 problems each"


# --- refusals ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "0.5"], "--temperature (=0.5) is a setting of --objective soft-sft; add --objective soft-sft"),
    (["--objective", "soft-sft", "--guidance-floor", "1.5"], "--guidance-floor (=1.5) must be in [0, 1]"),
    (["--objective", "soft-sft", "--guidance-start", "0.3", "--guidance-floor", "0.5"],
     "--guidance-floor (=0.5) must be in [0, 0.3]"),
    (["--objective", "soft-sft", "--guidance-warmup", "-1"], "--guidance-warmup (=-1) must be 0 or more"),
    (["--objective", "soft-sft", "--guidance-schedule", "cos"],
     "Unknown --guidance-schedule 'cos'. Did you mean: cosine?"),
    (["--objective", "soft-sft", "--soft-grad", "flo"], "Unknown --soft-grad 'flo'. Did you mean: flow?"),
    (["--objective", "soft-sft", "--max-topk", "0"], "--max-topk (=0) must be 1 or more"),
    (["--objective", "soft-sft", "--top-p", "0"], "--top-p (=0) must be in (0, 1]"),
    (["--objective", "soft-sft", "--beta", "0.1"], "--beta (=0.1) sets gkd's divergence or dpo's KL strength"),
    (["--objective", "soft-sft", "--env", "basic_arithmetic"], "or --env (='basic_arithmetic'), not both"),
    (["--n", "4"], "--n sets the problems of --env; add --env NAME"),
])
def test_bad_flags_are_refused_in_one_line_before_anything_is_written(tmp_path, pairs_file, capsys, args, message):
    assert main(["distill", pairs_file, "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--env", "basic_arithmatic"], "--env (='basic_arithmatic'): Unknown environment 'basic_arithmatic'. Did you "
                                    "mean: basic_arithmetic,"),
    (["--env", "basic_arithmetic", "--env-seed", "1", "--env-seed", "1"], "--env-seed (=1) is given more than once"),
    (["--env", "basic_arithmetic", "--n", "0"], "--n (=0) must be 1 or more"),
    (["--env", "basic_arithmetic", "--objective", "dpo"],
     "--env (='basic_arithmetic') gives gold answers, which only --objective soft-sft trains on"),
    (["--env", "basic_arithmetic", "--env-config", "max_terms=x"],
     "--env (='basic_arithmetic'): Invalid value 'x' for config key 'max_terms'"),
    ([], "give SOURCE (a run folder or pairs file), or --env NAME with --objective soft-sft"),
])
def test_a_bad_environment_source_is_refused_in_one_line(tmp_path, capsys, args, message):
    extra = [] if "--objective" in args else ["--objective", "soft-sft"]
    assert main(["distill", "--out", str(tmp_path / "out"), *extra, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
