"""pass@k and maj@k of methods that draw N answers per problem (self-consistency, best-of-N),
computed from the records' `sample_answers` and `sample_correct`: the pure estimators, the
summary columns `pass@k` and `maj@k` both methods contribute, and the figure of accuracy
against k.

pass@k (Chen et al., 2021, "Evaluating Large Language Models Trained on Code"): the chance that
at least one of k samples is right, estimated without bias from all N samples of a problem
(c of them right) as 1 - C(N - c, k) / C(N, k), averaged over the group's problems.

maj@k: whether the majority vote over the problem's *first* k samples is right, averaged over
the group's problems (see `maj_at_k` for why the first k).

Which k: `redumix report --ks 1,2,4,8` (`metrics.summarize(ks=...)`) names them; by default the
powers of two up to N, and N itself (`default_ks`). A k above a group's N leaves its columns
empty for that group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from harness.methods.contributions import Contributions, ReportFigure, SummaryColumns


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are right: 1 - C(n-c, k) / C(n, k).

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k / i) (Chen et al., 2021), whose factors
    all lie in [0, 1): no binomial coefficient is formed, so nothing overflows for n in the
    hundreds or thousands. With fewer than k wrong samples (n - c < k) every k-subset holds a
    right one: 1.0. With none right: 0.0.

    Raises:
        ValueError: not 0 <= c <= n, or not 1 <= k <= n.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} (={value!r}) must be a whole number")
    if not 0 <= c <= n:
        raise ValueError(f"c (={c}) must be between 0 and n (={n}): the number of right samples among n")
    if not 1 <= k <= n:
        raise ValueError(f"k (={k}) must be between 1 and n (={n}): pass@k needs at least k samples")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int,
             logprobs: Sequence[float] | None = None) -> bool:
    """Whether the majority vote over the first k samples is right.

    The vote is self-consistency's (`decoders.self_consistency.method.majority_vote`): the answer
    most samples gave wins (samples without an answer do not vote); a tie goes to the answer
    whose samples' log-probabilities sum higher, and the vote's sample is that answer's most
    likely one; its grade (`correct[i]`) is the result. Without `logprobs` (best-of-N's records
    keep none) every sample weighs the same, and a tie goes to the tied answer given first.

    Why the first k samples, not k drawn at random or the mean over all C(N, k) subsets: sample
    j of a problem draws from its own seeded stream whatever N is (`sample_key`), so the first k
    samples of an N-sample record are exactly the samples a run with n=k draws, and maj@k is the
    accuracy such a run's vote scores (maj@N is self-consistency's own vote; only a tie on counts
    whose log-probability sums differ by less than the records' 4 decimals could come out
    otherwise). The numbers are therefore deterministic and nested: the same N samples give the
    same maj@k for every k, and an n=8 folder's maj@4 equals an n=4 folder's accuracy on the same
    seed. The N samples are independent draws, so the first k estimate the same quantity as a
    random k-subset, without a second random choice; the mean over all subsets would have less
    variance, but costs C(N, k) votes per problem and matches no run's accuracy.

    Raises:
        ValueError: k outside 1..len(answers), or lists of different lengths.
    """
    if len(correct) != len(answers) or (logprobs is not None and len(logprobs) != len(answers)):
        raise ValueError(f"need one grade (and log-probability) per answer, got {len(answers)} answers, "
                         f"{len(correct)} grades, {'no' if logprobs is None else len(logprobs)} log-probabilities")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(answers):
        raise ValueError(f"k (={k!r}) must be a whole number between 1 and the number of samples (={len(answers)})")
    # Imported here: self-consistency's method module imports its report, which imports this module.
    from decoders.self_consistency.method import majority_vote

    weights = [0.0] * k if logprobs is None else [float(lp) for lp in logprobs[:k]]
    return bool(correct[majority_vote(list(answers[:k]), weights)])


def default_ks(n: int) -> list[int]:
    """The k shown for N samples when the report names none: the powers of two up to N, and N."""
    ks = [2**p for p in range(n.bit_length()) if 2**p <= n]
    return ks + ([n] if n not in ks else [])


def pass_column(k: int) -> str:
    return f"pass@{k}"


def maj_column(k: int) -> str:
    return f"maj@{k}"


def _graded(group: pd.DataFrame) -> list[tuple[list, list, list | None]]:
    """(answers, grades, log-probabilities or None) of each record whose every sample was graded
    (lm-eval tasks without a verifier leave `sample_correct` null)."""
    out = []
    logprobs_of = group["sample_logprobs"] if "sample_logprobs" in group else [None] * len(group)
    for answers, correct, logprobs in zip(group["sample_answers"], group["sample_correct"], logprobs_of,
                                          strict=True):
        if not isinstance(answers, list) or not isinstance(correct, list) or not answers \
                or len(correct) != len(answers) or any(c is None for c in correct):
            continue
        ok = isinstance(logprobs, list) and len(logprobs) == len(answers) \
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in logprobs)
        out.append((answers, [bool(c) for c in correct], logprobs if ok else None))
    return out


def sampled_columns(group: pd.DataFrame) -> dict:
    """pass@k and maj@k of one group, each the mean over its graded records, for the k the report
    asks for (`harness.analysis.metrics.asked_ks`) or else `default_ks` of the group's N (its
    smallest sample count); an asked k above N is NaN."""
    from harness.analysis.metrics import asked_ks

    graded = _graded(group)
    if not graded:
        return {}
    n = min(len(answers) for answers, _, _ in graded)
    out = {}
    for k in asked_ks() or default_ks(n):
        if k > n:
            out |= {pass_column(k): math.nan, maj_column(k): math.nan}
            continue
        out[pass_column(k)] = sum(pass_at_k(len(c), sum(c), k) for _, c, _ in graded) / len(graded)
        out[maj_column(k)] = sum(maj_at_k(a, c, k, lp) for a, c, lp in graded) / len(graded)
    return out


def _ks_of(row: pd.Series) -> list[int]:
    """The k of a summary row's filled maj@k columns, in increasing order."""
    return sorted(int(c.removeprefix("maj@")) for c in row.index
                  if c.startswith("maj@") and c.removeprefix("maj@").isdigit() and pd.notna(row[c]))


# What tells a summary group's records apart (a report over several runs adds `run`).
GROUP = ("run", "model", "env_label", "decoder_label", "variant")


def _group_key(row, columns) -> tuple:
    return tuple("" if row[c] is None or (isinstance(row[c], float) and math.isnan(row[c])) else str(row[c])
                 for c in columns)


def _sample_counts(records: pd.DataFrame) -> dict[tuple, int]:
    """Each summary group's N (its records' most samples), by `_group_key`."""
    if "sample_answers" not in records:
        return {}
    columns = [c for c in GROUP if c in records]
    out: dict[tuple, int] = {}
    for _, row in records.iterrows():
        if isinstance(row["sample_answers"], list):
            key = _group_key(row, columns)
            out[key] = max(out.get(key, 0), len(row["sample_answers"]))
    return out


def accuracy_vs_k(summary: pd.DataFrame, records: pd.DataFrame, reference: str | None = None) -> str | None:
    """maj@k (solid) and pass@k (dashed) against k, one line pair per decoder label, each at its
    group of the largest N (a smaller N's samples are the first of these)."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    from harness.analysis.plots import group_label, panels, png, series

    sizes = _sample_counts(records)
    columns = [c for c in GROUP if c in records]
    shown = []
    for title, panel in series(summary):
        lines = {}
        for _, row in panel.iterrows():
            ks = _ks_of(row)
            rank = (sizes.get(_group_key(row, columns), 0), len(ks))
            if ks and rank > lines.get(row["decoder_label"], ((0, 0), None, None))[0]:
                lines[row["decoder_label"]] = (rank, ks, row)
        lines = {label: line[1:] for label, line in lines.items()}
        if lines:
            shown.append((title, [lines[label] for label in sorted(lines)]))
    if not shown:
        return None
    fig, axes = panels(len(shown))
    for ax, (title, lines) in zip(axes, shown, strict=False):
        for ks, row in lines:
            name = group_label(row)
            (drawn,) = ax.plot(ks, [row[maj_column(k)] for k in ks], marker="o", label=f"{name} maj@k")
            ax.plot(ks, [row[pass_column(k)] for k in ks], "--", marker=".", color=drawn.get_color(),
                    label=f"{name} pass@k")
        ax.set(title=title, xlabel="k (samples)", ylabel="accuracy", ylim=(-0.02, 1.02))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({k for ks, _ in lines for k in ks}))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7)
    return png(fig)


# Both methods' groups get these columns and the figure (`decoders/self_consistency/report.py`,
# `decoders/best_of_n/report.py`).
PASS_MAJ_COLUMNS = SummaryColumns(("pass@{k}", "maj@{k}"), sampled_columns,
                                  reads=("sample_answers", "sample_correct", "sample_logprobs"))
ACCURACY_VS_K = ReportFigure(
    "Accuracy vs k (maj@k, pass@k)", accuracy_vs_k,
    "For methods that draw N answers per problem: maj@k, the accuracy of the majority vote over each problem's "
    "first k samples (what a run with n=k votes on), and pass@k dashed, the unbiased estimate (Chen et al., 2021) "
    "of the chance that any of k samples is right, from all N. Each decoder is drawn at its largest N; the k are "
    "`redumix report --ks`, by default the powers of two up to N and N.")
SAMPLED_ANSWERS = Contributions(columns=(PASS_MAJ_COLUMNS,), figures=(ACCURACY_VS_K,))
