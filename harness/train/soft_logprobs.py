"""The log-probability of one soft (mixture) step under the policy, by how its input was drawn.

GRPO's ratio and KL need log pi(action) for every completion position. At a soft step the
action is not one token but the mixture weights fed as `weights @ E`; each definition
below is the log-density of what was drawn, so the ratio of new to old is a proper
importance ratio for that draw:

- `sampled_ids` (mix `different_tokens`; CoT2's multi-token sampling, arXiv 2505.23648):
  the sum of the drawn ids' log-probabilities under the tempered policy. The ids are
  drawn without replacement, so this is CoT2's i.i.d. form, not the exact
  without-replacement probability.
- `dirichlet` (mix `dirichlet`; CoT2's Dirichlet variant): the Dirichlet(alpha * p) log-density
  of the weights, p the policy's distribution renormalised over the kept tokens.
- `gumbel` (mix `gumbel`; SofT-GRPO, arXiv 2511.06411): the log-density of the perturbed
  scores g'_i = log p_i + g_i (g standard Gumbel) over the kept tokens,
  sum_i [-(g'_i - log p_i) - exp(-(g'_i - log p_i))].

Inputs are per soft step (N of them) over the K kept positions the rollout recorded;
`kept` marks the tokens the rollout's top-k / top-p / min-p filter kept (K is max_topk).
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFINITIONS = ("sampled_ids", "dirichlet", "gumbel")
# Weights below this count as this in the Dirichlet density: float32 Gamma draws of tiny shapes
# underflow to exactly 0, whose log-density is not finite.
MIN_WEIGHT = 1e-30


def kept_logprobs(logprobs_at_ids: Tensor, kept: Tensor) -> Tensor:
    """(N, K) tempered log-probs of the kept ids -> log p renormalised over the kept set
    (-inf elsewhere): the distribution the rollout mixed from."""
    masked = logprobs_at_ids.masked_fill(~kept, float("-inf"))
    return masked - torch.logsumexp(masked, dim=-1, keepdim=True)


def sampled_ids_logprob(logprobs_at_ids: Tensor, weights: Tensor) -> Tensor:
    """(N,) sum of the log-probs of the ids the step drew (those with a weight above 0)."""
    drawn = weights > 0
    return torch.where(drawn, logprobs_at_ids, torch.zeros_like(logprobs_at_ids)).sum(dim=-1)


def dirichlet_logprob(log_p: Tensor, weights: Tensor, kept: Tensor, alpha: float) -> Tensor:
    """(N,) log Dir(weights; alpha * p) over the kept set:
    lgamma(sum a) - sum lgamma(a_i) + sum (a_i - 1) log w_i, a_i = alpha * p_i."""
    a = alpha * log_p.exp()
    a = torch.where(kept, a, torch.ones_like(a))  # positions outside the kept set add nothing below
    log_w = torch.log(weights.clamp_min(MIN_WEIGHT))
    zero = torch.zeros_like(a)
    terms = torch.where(kept, (a - 1) * log_w - torch.lgamma(a), zero)
    return torch.lgamma(torch.where(kept, a, zero).sum(dim=-1)) + terms.sum(dim=-1)


def gumbel_logprob(log_p: Tensor, scores: Tensor, kept: Tensor) -> Tensor:
    """(N,) log-density of the perturbed scores g' = log p + g, g ~ Gumbel(0, 1) i.i.d., over the kept set."""
    z = scores - log_p
    z = torch.where(kept, z, torch.zeros_like(z))
    return torch.where(kept, -z - torch.exp(-z), torch.zeros_like(z)).sum(dim=-1)


def soft_step_logprob(definition: str, logprobs_at_ids: Tensor, weights: Tensor, kept: Tensor, scores: Tensor,
                      alpha: float) -> Tensor:
    """(N,) log pi of N soft steps under `definition` (see the module docstring)."""
    if definition == "sampled_ids":
        return sampled_ids_logprob(logprobs_at_ids, weights)
    log_p = kept_logprobs(logprobs_at_ids, kept)
    if definition == "dirichlet":
        return dirichlet_logprob(log_p, weights, kept, alpha)
    if definition == "gumbel":
        return gumbel_logprob(log_p, scores, kept)
    raise ValueError(f"soft-step log-prob definition {definition!r} is not one of {', '.join(DEFINITIONS)}")
