"""`redumix train grpo`: reinforcement learning with verifiable rewards on our environments.

A YAML training config names the base model, the training problems (environments and
seeds, as a sweep does), held-out evaluation seeds, the reward (the environment's
verifier score and an optional format reward, with weights), the rollout kind and
TRL's GRPO settings. Training runs through TRL's `GRPOTrainer`:

- discrete rollouts: TRL's own generation and per-token log-probs, unchanged;
- mixture rollouts (MoT-G): the chain of thought is decoded by our soft decoders
  (`different_tokens`, `dirichlet`, `gumbel`) and the answer after it discretely; a
  subclass of the trainer replaces only the rollout and the per-token log-probs
  (`mixture_trainer`), with each soft step's log-probability as defined in
  `soft_logprobs`.

The result is a model folder like `redumix distill`'s (`--model` loads it) with
train_config.json, training_log.csv and training_curve.png beside it.

Modules: config (the YAML file and its checks), problems (training and evaluation
problems, their disjointness, the dataset rows), rewards (reward functions),
soft_logprobs (pure log-probability definitions of soft steps), soft_rollout (decoding
the rollouts with our engine and keeping what rebuilds each soft input),
mixture_trainer (the GRPOTrainer subclass), curve (the training curve), run (`train_grpo`),
command (the command line).
"""

from __future__ import annotations

# Nothing imported here: checking a config must not wait for torch, TRL or peft to import.
