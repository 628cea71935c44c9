"""Distillation losses on per-token log-probs: pure functions, no model in sight.

Every function takes normalised log-probs of shape (B, T, V) for the student and the
teacher and a (B, T) mask of the tokens that count (the answer tokens), and returns the
mean over those tokens of a per-token quantity summed over the vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def generalized_jsd(student_logprobs: Tensor, teacher_logprobs: Tensor, beta: float, mask: Tensor) -> Tensor:
    """GKD's generalised Jensen-Shannon divergence, in TRL's convention for `beta`.

    beta = 0: forward KL(teacher || student), whose gradient is that of the cross-entropy
    under the teacher (the ReDuMix seed's L_GKD: the teacher's entropy is a constant);
    beta = 1: reverse KL(student || teacher); otherwise
    beta * KL(T || M) + (1 - beta) * KL(S || M) with M = beta * T + (1 - beta) * S.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta (={beta}) must be in [0, 1]: 0 is forward KL, 1 reverse KL")
    if beta == 0.0:
        per_token = kl_divergence(teacher_logprobs, student_logprobs)
    elif beta == 1.0:
        per_token = kl_divergence(student_logprobs, teacher_logprobs)
    else:
        # log M, mixed in log space so that no probability underflows to an exact 0.
        mixture = torch.logsumexp(
            torch.stack([teacher_logprobs + math.log(beta), student_logprobs + math.log1p(-beta)]), dim=0
        )
        per_token = beta * kl_divergence(teacher_logprobs, mixture) + (1.0 - beta) * kl_divergence(
            student_logprobs, mixture
        )
    return masked_mean(per_token, mask)


def teacher_cross_entropy(student_logprobs: Tensor, teacher_logprobs: Tensor, mask: Tensor) -> Tensor:
    """-sum_w P_teacher(w) log P_student(w) per token, averaged: the seed's L_GKD as written."""
    teacher = teacher_logprobs.exp()
    per_token = -(teacher * torch.where(teacher > 0, student_logprobs, torch.zeros_like(student_logprobs))).sum(-1)
    return masked_mean(per_token, mask)


def kl_divergence(p_logprobs: Tensor, q_logprobs: Tensor) -> Tensor:
    """KL(P || Q) per position, summed over the last dimension; terms where P is 0 count 0."""
    p = p_logprobs.exp()
    # Zero the logs where P is 0 before multiplying, so neither value nor gradient sees 0 * -inf.
    zero = torch.zeros_like(p_logprobs)
    p_log, q_log = torch.where(p > 0, p_logprobs, zero), torch.where(p > 0, q_logprobs, zero)
    return (p * (p_log - q_log)).sum(-1)


def masked_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, T) values over the positions where `mask` is set; 0 (with a gradient path) when none is."""
    mask = mask.bool()
    return torch.where(mask, per_token, torch.zeros_like(per_token)).sum() / mask.sum().clamp_min(1)
