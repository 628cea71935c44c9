"""DeRa against models retrained at the strength it stands for.

DeRa (`decoders/dera`) decodes softmax(lam * logits_aligned + (1 - lam) * logits_ref). Its
claim: when the aligned model was trained with KL strength beta0 from the reference, the
mixture approximates the model trained from the same reference at beta0 / lam. DPO has that
beta, so `redumix dera-check FOLDER` tests the claim on a sweep folder that holds, for the
same problems:

* DeRa's greedy answers (`name: dera`, `models: {aligned: ANCHOR}`, several lambdas: records
  naming their `ref_model` and `aligned_model`), with the sweep's model as the reference;
* answers of DPO models trained from that reference on the same pairs at other betas (entries
  naming their own model, `models: {policy: PATH}`: greedy ones in configs/dera-check.yaml),
  and of the anchor itself; each model folder's distill_config.json (written by `redumix
  distill`) says it was DPO and at which beta;
* the reference entry's answers (the sweep's `reference`, the base's greedy answers), which the
  accuracies are paired with.

Per (lam, retrained model) it computes the per-token KL(P_retrained || P_DeRa(lam)),
teacher-forced along both of their greedy answers to every problem (an answer that ended on
EOS includes it) and averaged over every token; and, for every DeRa setting and model, the
mean KL from the reference along its own answers. A setting stands for the retrained model
whose beta is beta0 / lam; the check holds for it when that model is the nearest.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from decoders.divergence import kl
from decoders.mixture import mix_logprobs
from harness.engine.loglikelihood import continuation_logprobs
from harness.engine.models import LoadedModel
from harness.engine.prompts import encode

PAIRS_FILE, MODELS_FILE, FIGURE_FILE = "dera_check.csv", "dera_check_models.csv", "dera_check.png"
TRAINING_CONFIG = "distill_config.json"  # what `redumix distill` writes into a model folder
TRAINING_LOG = "training_log.csv"


def dera_logprobs(ref: Tensor, aligned: Tensor, lam: float) -> Tensor:
    """(T, V) log-probs of DeRa(lam) from the two models' (T, V) log-probs at the same positions."""
    return mix_logprobs(torch.stack([ref, aligned]), [1.0 - lam, lam])


def token_kls(target: Tensor, approx: Tensor) -> Tensor:
    """Per-position KL(target || approx) of (T, V) log-probs: (T,)."""
    return kl(target, approx)


@dataclass(frozen=True)
class Retrained:
    """A DPO model of the check: its name (as the sweep config gives it), beta and decoder label."""

    name: str
    beta: float
    label: str


@dataclass
class DeraCheck:
    """The check's tables (see the module docstring) and where they were written."""

    pairs: pd.DataFrame  # lam, dera_beta (beta0 / lam), model, beta, matching, kl, tokens, answers
    models: pd.DataFrame  # label, kind, beta, kl_from_base, tokens, accuracy, paired diff, DPO progress
    anchor_beta: float
    paths: tuple[Path, ...] = ()

    def verdicts(self) -> list[str]:
        """One line per DeRa setting: whether its own retrained model is the nearest."""
        lines = []
        for lam, rows in self.pairs.groupby("lam", sort=True):
            own = rows[rows["matching"]]
            if own.empty:
                lines.append(f"lam={lam:g} (beta {self.anchor_beta / lam:g}): no retrained model at that beta")
                continue
            others = rows[~rows["matching"]]
            nearest = rows.loc[rows["kl"].idxmin()]
            held = bool(others.empty or own["kl"].iloc[0] < others["kl"].min())
            lines.append(f"lam={lam:g} (beta {self.anchor_beta / lam:g}): KL to its retrained model "
                         f"{own['kl'].iloc[0]:.4f}, to the others "
                         f"{', '.join(f'{k:.4f}' for k in others['kl']) or 'none'}: "
                         + ("nearest, as claimed" if held else f"nearest is beta {nearest['beta']:g}"))
        return lines


def check_folder(folder: str | Path, *, dtype: str = "float32", device: str = "cpu", batch_size: int = 8,
                 loaded: dict[str, LoadedModel] | None = None, write: bool = True) -> DeraCheck:
    """Run the check on a sweep folder (see the module docstring) and write its tables and figure.

    `loaded`: models already loaded, by the names the records give them.

    Raises:
        ValueError: the folder holds no DeRa answers, several reference or aligned models, no
            retrained models, or a model folder without its DPO training config.
    """
    from harness.analysis.metrics import normalize
    from harness.analysis.report import read_folder

    folder = Path(folder)
    records, _, spec = read_folder(folder)
    records = normalize(records)
    # DeRa's records are the ones that name both of the models they mixed.
    dera = records[records["aligned_model"].notna()] if "aligned_model" in records else records[:0]
    if dera.empty:
        raise ValueError(f"{folder} holds no DeRa answers; sweep `name: dera` with `models: {{aligned: ANCHOR}}` "
                         "beside entries of the retrained models (see configs/dera-check.yaml)")
    base, anchor = _one(dera, "ref_model", folder), _one(dera, "aligned_model", folder)
    anchor_beta = _dpo_beta(anchor)
    # Entries that name their own model (`models: {policy: PATH}`) answer with the retrained models.
    entries = (spec.get("sweep") or {}).get("decoders", [])
    policies = {d["label"]: (d.get("models") or {}).get("policy") for d in entries}
    policies = {label: path for label, path in policies.items() if path and path != base}
    answered = set(records["decoder_label"])
    retrained = sorted((Retrained(path, _dpo_beta(path), label) for label, path in policies.items()
                        if label in answered), key=lambda r: r.beta)
    if not retrained:
        raise ValueError(f"{folder} holds no answers of retrained models; add entries with `models: {{policy: PATH}}` "
                         "for each DPO model, e.g. `name: greedy` (see configs/dera-check.yaml)")
    reference = records[records["decoder_label"] == spec.get("reference")]
    greedy = records[records["decoder_label"].isin(policies)]
    greedy = greedy.assign(model=greedy["decoder_label"].map(policies))
    models = dict(loaded or {})
    for name in [base, anchor, *(r.name for r in retrained)]:
        if name not in models:
            from harness.engine.models import load_model

            models[name] = load_model(name, dtype=dtype, device=device)
    scorer = _Scorer(models, batch_size)
    pairs = _pair_table(dera, greedy, base, anchor, anchor_beta, retrained, scorer)
    table = _model_table(dera, greedy, reference, base, anchor, retrained, scorer)
    result = DeraCheck(pairs, table, anchor_beta)
    if write:
        result.paths = _write(folder, result)
    return result


class _Scorer:
    """Teacher-forced log-probs of answers under each model, each computed once."""

    def __init__(self, models: dict[str, LoadedModel], batch_size: int) -> None:
        self.models, self.batch_size = models, batch_size
        self._cache: dict[tuple[str, tuple, tuple], Tensor] = {}

    def sequence(self, record) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(prompt ids, answer ids) of a record; None for an empty answer."""
        tok = next(iter(self.models.values())).tokenizer
        answer = tok(record["completion"], add_special_tokens=False)["input_ids"]
        if record.get("finish_reason") == "eos" and tok.eos_token_id is not None:
            answer = [*answer, tok.eos_token_id]  # how the answer ended is part of it
        return (tuple(encode(tok, record["prompt"])), tuple(answer)) if answer else None

    def logprobs(self, model: str, sequences: Sequence[tuple[tuple, tuple]]) -> list[Tensor]:
        todo = list(dict.fromkeys(s for s in sequences if (model, *s) not in self._cache))
        if todo:
            rows = continuation_logprobs(self.models[model], todo, batch_size=self.batch_size)
            self._cache.update({(model, *s): row.float().cpu() for s, row in zip(todo, rows, strict=True)})
        return [self._cache[(model, *s)] for s in sequences]

    def dera(self, base: str, anchor: str, lam: float, sequences) -> list[Tensor]:
        return [dera_logprobs(r, a, lam) for r, a in zip(self.logprobs(base, sequences),
                                                         self.logprobs(anchor, sequences), strict=True)]


def _pair_table(dera, greedy, base, anchor, anchor_beta, retrained, scorer) -> pd.DataFrame:
    rows = []
    for lam, answers in dera.groupby("lambda", sort=True):
        lam = float(lam)
        for model in retrained:
            theirs = greedy[greedy["model"] == model.name]
            sequences = [s for s in map(scorer.sequence, _records(answers) + _records(theirs)) if s is not None]
            kls = [token_kls(t, d) for t, d in zip(scorer.logprobs(model.name, sequences),
                                                    scorer.dera(base, anchor, lam, sequences), strict=True)]
            tokens = sum(len(k) for k in kls)
            rows.append({
                "lam": lam, "dera_beta": anchor_beta / lam if lam else math.inf, "model": model.name,
                "beta": model.beta, "matching": lam > 0 and math.isclose(model.beta, anchor_beta / lam, rel_tol=1e-6),
                "kl": float(torch.cat(kls).mean()) if tokens else math.nan, "tokens": tokens,
                "answers": len(sequences),
            })
    return pd.DataFrame(rows)


def _model_table(dera, greedy, reference, base, anchor, retrained, scorer) -> pd.DataFrame:
    """Each DeRa setting's and each retrained model's mean KL from the base along its own answers,
    its accuracy with the paired difference against the reference's answers, and how far DPO got."""
    rows = []
    for lam, answers in dera.groupby("lambda", sort=True):
        sequences = [s for s in map(scorer.sequence, _records(answers)) if s is not None]
        own = scorer.dera(base, anchor, float(lam), sequences)
        rows.append(_model_row(f"dera lam={float(lam):g}", "dera", float(lam), own,
                               scorer.logprobs(base, sequences), answers, reference))
    for model in retrained:
        answers = greedy[greedy["model"] == model.name]
        sequences = [s for s in map(scorer.sequence, _records(answers)) if s is not None]
        row = _model_row(model.label, "retrained", math.nan, scorer.logprobs(model.name, sequences),
                         scorer.logprobs(base, sequences), answers, reference)
        rows.append(row | {"beta": model.beta, "model": model.name, **_dpo_progress(model.name)})
    return pd.DataFrame(rows)


def _model_row(label, kind, lam, own, base, answers, reference) -> dict:
    from harness.analysis.paired import paired_statistics

    kls = [token_kls(o, b) for o, b in zip(own, base, strict=True)]
    tokens = sum(len(k) for k in kls)
    # Paired with the reference's answer to the same problem, every env pooled.
    paired = paired_statistics(answers, reference, ["env_label", "problem_id", "seed"], seed=0) \
        if len(reference) else {}
    return {"label": label, "kind": kind, "lam": lam, "beta": math.nan, "model": "",
            "kl_from_base": float(torch.cat(kls).mean()) if tokens else math.nan, "tokens": tokens,
            "n": len(answers), "accuracy": float(answers["correct"].astype(bool).mean()),
            **{c: paired.get(c, math.nan) for c in ("pairs", "accuracy_diff", "accuracy_diff_lo", "accuracy_diff_hi")}}


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.sort_values(["env_label", "seed", "problem_id"]).to_dict("records")


def _one(frame: pd.DataFrame, column: str, folder: Path) -> str:
    values = sorted(set(frame[column].dropna()))
    if len(values) != 1:
        raise ValueError(f"{folder}: the DeRa answers name {len(values)} {column} values ({', '.join(values)}); "
                         "the check compares one reference and one anchor, so give the sweep one dera entry")
    return values[0]


def _dpo_beta(model: str) -> float:
    """The beta a DPO model folder was trained at, from its distill_config.json."""
    path = Path(model) / TRAINING_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"model {model!r}: cannot read {path} ({type(err).__name__}); the check needs models "
                         "written by `redumix distill --objective dpo`, which names their beta there") from None
    config = config.get("training", config) if isinstance(config, dict) else {}  # the settings that trained it
    if config.get("objective") != "dpo" or not isinstance(config.get("beta"), int | float):
        raise ValueError(f"model {model!r} was trained with objective {config.get('objective')!r}, not DPO with a "
                         f"beta ({path}); train it with `redumix distill --objective dpo --beta B`")
    return float(config["beta"])


def _dpo_progress(model: str) -> dict:
    """How far DPO got: the last logged reward accuracy and margin of the model's training log."""
    path = Path(model) / TRAINING_LOG
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except OSError:
        return {"dpo_reward_accuracy": math.nan, "dpo_reward_margin": math.nan}

    def last(key: str) -> float:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        return values[-1] if values else math.nan

    return {"dpo_reward_accuracy": last("rewards/accuracies"), "dpo_reward_margin": last("rewards/margins")}


def figure_png(check: DeraCheck) -> bytes:
    """KL to the matching retrained model (x) against KL to each other retrained model (y), one
    point per (DeRa setting, other model): points above the diagonal agree with the claim."""
    import matplotlib.pyplot as plt

    from harness.analysis.plots import png

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    top = 0.0
    for lam, rows in check.pairs.groupby("lam", sort=True):
        own = rows[rows["matching"]]
        if own.empty:
            continue
        x = float(own["kl"].iloc[0])
        for _, other in rows[~rows["matching"]].iterrows():
            ax.scatter(x, other["kl"], s=40)
            ax.annotate(f"lam={lam:g} vs beta {other['beta']:g}", (x, other["kl"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
            top = max(top, x, float(other["kl"]))
    top = top * 1.1 or 1.0
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="KL(retrained at beta0/lam || DeRa(lam)) per token",
           ylabel="KL(other retrained || DeRa(lam)) per token",
           title=f"DeRa vs retrained models (anchor beta0 = {check.anchor_beta:g})")
    fig.tight_layout()
    return base64.b64decode(png(fig))


def _write(folder: Path, check: DeraCheck) -> tuple[Path, ...]:
    from harness.runs.output_paths import write_atomically

    paths = (folder / PAIRS_FILE, folder / MODELS_FILE, folder / FIGURE_FILE)
    write_atomically(paths[0], check.pairs.to_csv(index=False))
    write_atomically(paths[1], check.models.to_csv(index=False))
    write_atomically(paths[2], figure_png(check))
    return paths
