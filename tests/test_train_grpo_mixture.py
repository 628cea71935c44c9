"""GRPO with mixture (MoT-G) rollouts: each soft step's log-prob definition against a hand
computation, the training forward's inputs against the rollout's (tensor for tensor), and training
runs of every mix on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from harness.engine.prompts import encode, render_chat
from harness.train.config import parse_train_config
from harness.train.mixture_trainer import action_logprobs, soft_input_embeddings
from harness.train.run import train_grpo
from harness.train.soft_logprobs import (
    dirichlet_logprob,
    gumbel_logprob,
    kept_logprobs,
    sampled_ids_logprob,
    soft_step_logprob,
)
from harness.train.soft_rollout import rollout_decoder, row_generators, soft_rollout
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

# A toy distribution over 5 tokens, as the policy's tempered log-probs at 4 recorded ids
# (the last one outside the kept set).
P = [0.5, 0.25, 0.15, 0.06, 0.04]
IDS = [0, 1, 2, 3]
KEPT = [True, True, True, False]


def toy() -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log(torch.tensor(P))
    return logp[IDS][None], torch.tensor([KEPT])


def test_sampled_ids_is_the_sum_of_the_drawn_ids_log_probs():
    at_ids, _ = toy()
    weights = torch.tensor([[0.0, 0.625, 0.375, 0.0]])  # ids 1 and 2 drawn, weighted by renormalised p
    assert sampled_ids_logprob(at_ids, weights).item() == pytest.approx(math.log(0.25) + math.log(0.15))


def test_the_dirichlet_log_density_of_the_weights_by_hand():
    at_ids, kept = toy()
    alpha = 3.0
    weights = torch.tensor([[0.6, 0.3, 0.1, 0.0]])
    p = [x / 0.9 for x in P[:3]]  # renormalised over the kept set
    a = [alpha * x for x in p]
    by_hand = (math.lgamma(sum(a)) - sum(math.lgamma(x) for x in a)
               + sum((x - 1) * math.log(w) for x, w in zip(a, [0.6, 0.3, 0.1], strict=True)))
    log_p = kept_logprobs(at_ids, kept)
    assert dirichlet_logprob(log_p, weights, kept, alpha).item() == pytest.approx(by_hand, rel=1e-5)
    reference = torch.distributions.Dirichlet(torch.tensor(a)).log_prob(torch.tensor([0.6, 0.3, 0.1]))
    assert soft_step_logprob("dirichlet", at_ids, weights, kept, weights, alpha).item() == pytest.approx(
        reference.item(), rel=1e-5)


def test_the_gumbel_noise_log_density_by_hand():
    at_ids, kept = toy()
    p = [x / 0.9 for x in P[:3]]
    scores = torch.tensor([[0.3, -0.8, 1.1, 0.0]])  # perturbed scores log p + g of the kept ids
    by_hand = sum(-(g - math.log(q)) - math.exp(-(g - math.log(q))) for g, q in zip([0.3, -0.8, 1.1], p, strict=True))
    log_p = kept_logprobs(at_ids, kept)
    assert gumbel_logprob(log_p, scores, kept).item() == pytest.approx(by_hand, rel=1e-5)
    reference = torch.distributions.Gumbel(torch.log(torch.tensor(p)), 1.0).log_prob(scores[0, :3]).sum()
    assert soft_step_logprob("gumbel", at_ids, scores, kept, scores, 1.0).item() == pytest.approx(reference.item(),
                                                                                                    rel=1e-5)


def test_action_log_probs_are_tokens_where_tokens_were_fed_and_mixtures_where_mixtures_were():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 5)
    completion = torch.tensor([[4, 1, 0]])
    soft = {"soft_fed": torch.tensor([[True, False, False]]),
            "soft_ids": torch.tensor([[IDS, IDS, IDS]]),
            "soft_weights": torch.tensor([[[0.0, 0.5, 0.5, 0.0]] * 3]),
            "soft_kept": torch.tensor([[KEPT] * 3]), "soft_scores": torch.zeros(1, 3, 4)}
    logps, entropy = action_logprobs(logits, completion, soft, "sampled_ids", temperature=0.7, alpha=1.0)
    tempered = torch.log_softmax(logits / 0.7, dim=-1)[0]
    assert logps[0, 0].item() == pytest.approx((tempered[0, 1] + tempered[0, 2]).item())
    assert logps[0, 1].item() == pytest.approx(tempered[1, 1].item())
    assert logps[0, 2].item() == pytest.approx(tempered[2, 0].item())
    assert entropy[0, 2].item() == pytest.approx(-(tempered[2].exp() * tempered[2]).sum().item())


@pytest.mark.parametrize(("mix", "decoder", "config"), [
    ("different_tokens", "soft", {"mode": "different_tokens", "num_tokens": 3}),
    ("dirichlet", "soft", {"mode": "dirichlet", "alpha": 1.0}),
    ("gumbel", "gumbel", {"tau": 0.5}),
])
def test_the_training_forward_feeds_the_rollouts_inputs_tensor_for_tensor(mix, decoder, config):
    loaded = tiny_model(init_std=0.5)
    settings = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "after_thinking_temperature": 1.0, "max_topk": 6}
    bound = rollout_decoder(decoder, config | settings, loaded.tokenizer)
    fed: list[tuple[str, torch.Tensor]] = []

    def capture(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            fed.append(("embeds", kwargs["inputs_embeds"].detach().clone()))
        else:
            fed.append(("ids", kwargs["input_ids"].detach().clone()))

    handle = loaded.model.model.register_forward_pre_hook(capture, with_kwargs=True)
    soft_steps = 0
    try:
        for i, question in enumerate(["What is 2 + 2?", "Name a colour."]):
            fed.clear()
            prompt = encode(loaded.tokenizer, render_chat(loaded.tokenizer, [{"role": "user", "content": question}]))
            record = soft_rollout(loaded, bound, [prompt], 12, row_generators(0, i, 1))
            padded = record.padded(len(record.completion_ids[0]), 6)
            input_ids = torch.tensor([prompt + record.completion_ids[0]])
            ours = soft_input_embeddings(loaded.model, input_ids, padded)[0, len(prompt):]
            # Forward 0 is the prefill; forward j then feeds the input of completion step j - 1.
            for step, (kind, tensor) in enumerate(fed[1:]):
                if record.fed[0][step]:
                    assert kind == "embeds" and torch.equal(tensor[0, -1], ours[step])
                    soft_steps += 1
                else:
                    fed = loaded.model.get_input_embeddings()(input_ids[0, len(prompt) + step])
                    assert torch.equal(ours[step], fed)
            if mix == "gumbel":  # the kept noise gives back the weights that were fed
                fed_at = padded["soft_fed"][0]
                kept, scores = padded["soft_kept"][0][fed_at], padded["soft_scores"][0][fed_at]
                rebuilt = torch.softmax(scores.masked_fill(~kept, -math.inf) / 0.5, dim=-1)
                assert torch.allclose(rebuilt, padded["soft_weights"][0][fed_at], atol=1e-6)
    finally:
        handle.remove()
    assert soft_steps > 0


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl-mix") / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Say a small number, {i}.", "answer": "[0-4]+"})
                            + "\n" for i in range(8)))
    return path


@pytest.mark.parametrize(("mix", "extra"), [("different_tokens", {}), ("dirichlet", {"alpha": 2.0}),
                                            ("gumbel", {"tau": 0.5})])
def test_mixture_rollouts_train_reproducibly_and_log_their_mixtures(tiny_model_dir, problems_file, tmp_path, mix,
                                                                     extra):
    data = {"model": str(tiny_model_dir), "extraction": "flexible",
            "train": {"envs": [{"name": f"file:{problems_file}", "n": 4, "config": {"checker": "regex"}}]},
            "rollout": {"kind": "mixture", "mix": mix, "max_new_tokens": 10, "config": {"max_topk": 5} | extra},
            "grpo": {"max_steps": 2, "lr": 1e-3, "beta": 0.04}}
    config = parse_train_config(data)
    first = train_grpo(config, tmp_path / "a")
    train_grpo(config, tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a)
    header, *rows = (tmp_path / "a" / "training_log.csv").read_text().splitlines()
    columns = header.split(",")
    assert {"soft/effective_tokens", "soft/steps", "kl", "reward", "loss", "entropy"} <= set(columns)
    effective = [float(r.split(",")[columns.index("soft/effective_tokens")]) for r in rows]
    assert all(1.0 <= e <= 5.0 for e in effective) and first.steps == 2
    record = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert record["rollout"]["logprob"] == {"different_tokens": "sampled_ids"}.get(mix, mix)
