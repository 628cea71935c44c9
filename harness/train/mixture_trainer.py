"""GRPO with mixture (MoT-G) rollouts: TRL's GRPOTrainer with its rollout and per-token log-probs replaced.

Why a subclass: TRL cannot express soft inputs. Its `rollout_func` hook (used here) lets
another engine decode, but TRL then recomputes every log-prob (the policy's, the old
policy's, the reference's) from token ids alone in `_get_per_token_logps_and_entropies`,
which would feed the recorded tokens where the rollout fed mixtures, and score one token
where the action was a mixture. So this class overrides, and only:

- `_get_per_token_logps_and_entropies`: feeds `weights @ E` at the soft steps, exactly the
  rollout's inputs, and returns each soft step's log-prob by its definition
  (`harness.train.soft_logprobs`); token steps keep TRL's tempered token log-prob;
- `_generate_and_score_completions` and `_compute_loss`: carry the rollout's soft records
  with the batch (TRL's batch holds token tensors only) to where the log-probs are taken.

Advantages, clipping, KL, loss types, accumulation, checkpoints and logging stay TRL's.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from harness.distill.deps import require
from harness.distill.whole_checkpoints import SavesWhole
from harness.engine.prompts import encode
from harness.train.soft_logprobs import soft_step_logprob
from harness.train.soft_rollout import rollout_decoder, row_generators, soft_rollout

SOFT_KEYS = ("soft_fed", "soft_ids", "soft_weights", "soft_kept", "soft_scores")


def soft_input_embeddings(model, input_ids: Tensor, soft: dict[str, Tensor] | None) -> Tensor:
    """(B, L, H) inputs: each token's embedding, and at soft steps `weights @ E` over the kept ids,
    computed as the engine computed it while decoding (`StreamBatch.soft_embeddings`).

    `soft` holds (B, T, K) records of the last T positions (the completion); None: tokens only.
    """
    layer = model.get_input_embeddings()
    embeds = layer(input_ids)
    if soft is None or not bool(soft["soft_fed"].any()):
        return embeds
    fed = soft["soft_fed"].to(embeds.device)
    length = fed.shape[1]
    rows, steps = fed.nonzero(as_tuple=True)
    table = layer.weight
    ids = soft["soft_ids"].to(table.device)[rows, steps]  # (N, K)
    weights = soft["soft_weights"].to(table.device, table.dtype)[rows, steps]
    mixed = (weights[:, :, None] * table[ids]).sum(dim=1)
    scale = getattr(layer, "embed_scale", None)
    if scale is not None:
        mixed = mixed * torch.as_tensor(scale, dtype=mixed.dtype, device=mixed.device)
    embeds = embeds.clone()
    embeds[rows, input_ids.shape[1] - length + steps] = mixed.to(embeds.dtype)
    return embeds


def action_logprobs(logits: Tensor, completion_ids: Tensor, soft: dict[str, Tensor] | None, definition: str,
                    temperature: float, alpha: float) -> tuple[Tensor, Tensor]:
    """(B, T, V) logits predicting each completion position -> ((B, T) log pi of each position's
    action, (B, T) entropy of the tempered distribution). Token steps: the token's tempered
    log-prob, as TRL's; soft steps: `definition`'s log-prob of the mixture that was fed."""
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    token = logprobs.gather(-1, completion_ids[..., None]).squeeze(-1)
    if soft is None or not bool(soft["soft_fed"].any()):
        return token, entropy
    fed = soft["soft_fed"].to(logits.device)
    rows, steps = fed.nonzero(as_tuple=True)
    at_ids = logprobs[rows, steps].gather(-1, soft["soft_ids"].to(logits.device)[rows, steps])
    values = soft_step_logprob(definition, at_ids, soft["soft_weights"].to(logits.device)[rows, steps],
                               soft["soft_kept"].to(logits.device)[rows, steps],
                               soft["soft_scores"].to(logits.device)[rows, steps], alpha)
    return token.index_put((rows, steps), values), entropy


def _mixture_rollout(prompts, trainer) -> dict:
    return trainer.mixture_rollout(prompts)


def mixture_trainer_class():
    trl = require("trl", "redumix train grpo")

    class MixtureGRPOTrainer(SavesWhole, trl.GRPOTrainer):
        """TRL's GRPOTrainer whose chain of thought is decoded, and scored, as mixtures of tokens
        (see the module docstring for what is replaced and why)."""

        def __init__(self, *args, rollout, loaded, **kwargs):
            self.soft_settings = rollout
            self.loaded = loaded
            self.loaded.prefix_cache = None  # caches of older weights would feed stale keys and values
            self.soft_decoder = rollout_decoder(rollout.decoder, rollout.decoder_config, loaded.tokenizer)
            self._soft_batch: dict[str, Tensor] | None = None
            with warnings.catch_warnings():
                # TRL marks rollout_func experimental; the tests here pin what this class relies on.
                warnings.filterwarnings("ignore", message=".*rollout_func.*experimental")
                super().__init__(*args, rollout_func=_mixture_rollout, **kwargs)

        # -- the rollout ---------------------------------------------------------------------

        def mixture_rollout(self, prompts: list[str]) -> dict:
            tokenizer = self.loaded.tokenizer
            prompt_ids = [encode(tokenizer, p) for p in prompts]
            model = self.loaded.model
            was_training = model.training
            model.eval()
            try:
                record = soft_rollout(self.loaded, self.soft_decoder, prompt_ids, self.soft_settings.max_new_tokens,
                                      row_generators(self.args.seed, self.state.global_step, len(prompts)))
            finally:
                model.train(was_training)
            length = max(len(ids) for ids in record.completion_ids)
            self._soft_batch = record.padded(length, self.soft_decoder.max_topk)
            effective = record.effective_tokens()
            mode = "train" if self.model.training else "eval"
            if effective:
                self._metrics[mode]["soft/effective_tokens"].append(sum(effective) / len(effective))
            self._metrics[mode]["soft/steps"].append(len(effective) / len(prompts))
            return {
                "prompt_ids": prompt_ids,
                "completion_ids": record.completion_ids,
                "logprobs": None,  # TRL computes the old policy's itself, through the override below
                # Forced tokens (the end-of-thinking marker after a budget) are no draw of the policy.
                "env_mask": [[0 if f else 1 for f in row] for row in record.forced],
            }

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            soft, self._soft_batch = self._soft_batch, None
            length = output["completion_ids"].shape[1]
            for key in SOFT_KEYS:
                value = soft[key][:, :length]
                output[key] = value.to(output["completion_ids"].device)
            return output

        def _compute_loss(self, model, inputs):
            self._soft_batch = {key: inputs[key] for key in SOFT_KEYS}
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._soft_batch = None

        # -- the log-probs -------------------------------------------------------------------

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **_multimodal):
            soft = self._soft_batch
            batch_size = batch_size or input_ids.size(0)
            completion_ids = input_ids[:, -logits_to_keep:]
            all_logps, all_entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                end = min(start + batch_size, input_ids.size(0))
                part = {k: v[start:end] for k, v in soft.items()} if soft is not None else None
                embeds = soft_input_embeddings(model, input_ids[start:end], part)
                with self.accelerator.autocast():
                    logits = model(inputs_embeds=embeds, attention_mask=attention_mask[start:end],
                                   use_cache=False).logits
                logits = logits[:, -logits_to_keep - 1:-1]  # position t predicts completion token t
                logps, entropy = action_logprobs(logits, completion_ids[start:end], part,
                                                 self.soft_settings.logprob, self.soft_settings.temperature,
                                                 float(self.soft_settings.decoder_config.get("alpha", 1.0)))
                all_logps.append(logps)
                all_entropies.append(entropy)
            entropies = torch.cat(all_entropies) if compute_entropy else None
            return torch.cat(all_logps), entropies, None

    return MixtureGRPOTrainer
