"""The pairs a distillation learns from: read from a ReDuMix run folder or a harvested pairs file.

A run (or sweep) folder is harvested in memory with harvest's own rule, so a
distillation and a `redumix harvest` of the same folder see the same pairs. A pairs
file is read as written by `redumix harvest` (or by hand, in the same shape).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.analysis.harvest import redumix_records, select_pairs

# Fields each objective reads from a pair; text fields must be strings.
NEEDED = {"gkd": ("prompt", "chosen", "reflective_prompt"), "dpo": ("prompt", "chosen", "rejected"),
          "soft-sft": ("prompt", "chosen")}


@dataclass(frozen=True)
class PairSet:
    """The pairs, where they came from, and a digest that tells a changed source apart."""

    pairs: list[dict]
    source: Path | None  # absolute; None for an environment's problems (see `env`)
    kind: str  # "run" (a run or sweep folder), "pairs" (a JSONL file) or "env" (gold answers of problems)
    records: int | None  # ReDuMix records read (run folders only)
    rule: str | None  # the harvest rule applied (run folders only)
    digest: str  # sha256 of the pairs' JSON
    lines: list[int] | None = None  # line number of each pair (pairs files only), for messages
    env: dict | None = None  # the environment, its config, seeds and count (kind "env" only)

    @property
    def label(self) -> str:
        """Where the pairs come from, in a word: the path, or the environment and its seeds."""
        if self.source is not None:
            return str(self.source)
        return f"env {self.env['env']}, seeds {self.env['seeds']}, {self.env['n']} problems each"


def load_pairs(source: str | Path, rule: str | None = None) -> PairSet:
    """The pairs in `source`: a run/sweep folder (selected by `rule`, default "improved") or a pairs file.

    Raises:
        ValueError: naming SOURCE and the fix: a missing path, a folder that holds no run,
            a run without ReDuMix records, an empty harvest, a malformed pairs file.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"SOURCE (={str(source)!r}) does not exist; give a run folder made with --decoder redumix "
                         "or a pairs file written by `redumix harvest`")
    if path.is_dir():
        return _from_run(path, rule or "improved")
    if rule is not None:
        raise ValueError(f"--rule (={rule!r}) selects records of a run folder, but SOURCE (={str(source)!r}) is a "
                         "pairs file, already selected when it was harvested; leave --rule out, or give the run folder")
    return _from_file(path)


def check_pairs(pair_set: PairSet, objective: str, lam: float | None) -> None:
    """Every pair has what `objective` reads (and a lambda for gkd unless `lam` is given).

    Raises:
        ValueError: naming the first pair that lacks a field, and the fix.
    """
    if pair_set.kind == "env":
        return  # built from the problems themselves (`harness.distill.env_answers`)
    where = _describe(pair_set)
    for index, pair in enumerate(pair_set.pairs):
        for key in NEEDED[objective]:
            if not isinstance(pair.get(key), str):
                if key == "reflective_prompt":
                    raise ValueError(
                        f"{where}: {_which(pair_set, index)} has no 'reflective_prompt' (the context x2 that GKD's "
                        "teacher reads); harvest the run again with this version of `redumix harvest`, distil the "
                        "run folder itself, or use --objective dpo")
                raise ValueError(f"{where}: {_which(pair_set, index)} has no text field {key!r}; each pair needs "
                                 f"{', '.join(NEEDED[objective])} for --objective {objective}")
        if objective == "gkd" and lam is None and not _is_weight(pair.get("lambda")):
            raise ValueError(f"{where}: {_which(pair_set, index)} has no 'lambda' in [0, 1] (the mixture weight "
                             "ReDuMix used); pass --lam to give one for every pair")


def base_model(pair_set: PairSet, override: str | None) -> str:
    """The model to start from: `override`, else the one model the pairs name.

    Raises:
        ValueError: the pairs name no model, or several.
    """
    if override is not None:
        return override
    names = Counter(str(p["model"]) for p in pair_set.pairs if p.get("model"))
    if len(names) == 1:
        return next(iter(names))
    where = _describe(pair_set)
    if not names:
        raise ValueError(f"{where}: the pairs name no model; pass --model with the model that wrote them")
    listing = ", ".join(f"{name!r} ({count} pairs)" for name, count in names.most_common())
    raise ValueError(f"{where}: the pairs come from several models ({listing}); pass --model to choose the base")


def lambda_summary(pairs: list[dict], lam: float | None) -> dict:
    """How the teacher's lambda is set: one value for all pairs, or the count of pairs per value."""
    if lam is not None:
        return {"given": lam, "pairs_per_value": {f"{lam:g}": len(pairs)}}
    counts = Counter(float(p["lambda"]) for p in pairs if _is_weight(p.get("lambda")))
    return {"given": None, "pairs_per_value": {f"{value:g}": n for value, n in sorted(counts.items())}}


def _from_run(path: Path, rule: str) -> PairSet:
    records = redumix_records(path, "SOURCE", "distil a run made with --decoder redumix, or a pairs file")
    pairs, identical = select_pairs(records, rule)
    if not pairs:
        hint = ("; pass --rule all to learn from every redo that differs from its first attempt"
                if rule != "all" else "")
        raise ValueError(f"SOURCE (={str(path)!r}): empty harvest: none of its {len(records)} ReDuMix records "
                         f"gives a pair under --rule {rule} ({identical} redos equal their first attempt){hint}")
    return PairSet(pairs=pairs, source=path.resolve(), kind="run", records=len(records), rule=rule,
                   digest=pairs_digest(pairs))


def _from_file(path: Path) -> PairSet:
    try:
        data = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"SOURCE (={str(path)!r}) cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"SOURCE (={str(path)!r}) is not UTF-8 text; give a pairs file written by "
                         "`redumix harvest` (one JSON object per line)") from None
    pairs, lines = [], []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pair = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"SOURCE (={str(path)!r}): line {number} is not JSON ({err.msg}, column {err.colno}); "
                             "fix or delete that line (each line is one pair, as `redumix harvest` writes)") from None
        if not isinstance(pair, dict):
            raise ValueError(f"SOURCE (={str(path)!r}): line {number} is not a JSON object; each line is one pair "
                             "with prompt, chosen, ... fields, as `redumix harvest` writes")
        pairs.append(pair)
        lines.append(number)
    if not pairs:
        raise ValueError(f"SOURCE (={str(path)!r}) holds no pairs; harvest some first (`redumix harvest RUN_DIR "
                         "--out pairs.jsonl`, with --all if none improved) or distil the run folder itself")
    return PairSet(pairs=pairs, source=path.resolve(), kind="pairs", records=None, rule=None,
                   digest=pairs_digest(pairs), lines=lines)


def pairs_digest(pairs: list[dict]) -> str:
    return hashlib.sha256(json.dumps(pairs, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _is_weight(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _describe(pair_set: PairSet) -> str:
    if pair_set.source is None:
        return f"--env (={pair_set.env['env']!r})"
    return f"SOURCE (={str(pair_set.source)!r})"


def _which(pair_set: PairSet, index: int) -> str:
    if pair_set.lines is not None:
        return f"line {pair_set.lines[index]}"
    pair = pair_set.pairs[index]
    return f"the record of {pair.get('problem_id')!r} at lambda={pair.get('lambda')}"
