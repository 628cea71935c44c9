"""Reflection-revision pairs from a ReDuMix run, in the shape DPO trainers read.

Each ReDuMix record holds the first attempt y1 (stage 1) and the mixture-decoded
redo (stage 4) for the same prompt x, each with its verdict. A pair is written as

    {"prompt": x, "chosen": redo, "rejected": y1, ...}

(TRL's DPOTrainer "standard" format: `prompt` is the exact rendered text the model
saw, so no chat template is applied twice), plus the reflective context x2
(`reflective_prompt`, for `redumix distill`'s GKD teacher), the verdicts, lambda,
feedback policy and ids that let a user trace or filter the pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.console import note
from harness.naming import unknown_name_message
from harness.runs.output_paths import check_new_file, write_atomically
from harness.runs.record_grid import grid_of
from harness.runs.store import RunDir

RULES: dict[str, str] = {
    "improved": "the first attempt was wrong and the redo is right",
    "all": "every record whose redo differs from its first attempt",
}


@dataclass(frozen=True)
class HarvestSummary:
    records: int  # ReDuMix records read
    pairs: int  # pairs written
    identical: int  # records skipped because the redo equals the first attempt


def select_pairs(records: Iterable[dict], rule: str = "improved") -> tuple[list[dict], int]:
    """(pairs, number of records whose redo is identical to the first attempt) under `rule`."""
    if rule not in RULES:
        raise ValueError(unknown_name_message("harvest rule", rule, RULES))
    pairs, identical = [], 0
    for record in records:
        original, revised = record["stage1_completion"], record["completion"]
        if original == revised:
            identical += 1
            continue
        if rule == "improved" and not (record["correct"] and not record["stage1_correct"]):
            continue
        pairs.append(_pair(record))
    return pairs, identical


def harvest(run_dir: str | Path, out: str | Path, rule: str = "improved", force: bool = False) -> HarvestSummary:
    """Write the pairs of the ReDuMix run in `run_dir` to the JSONL file `out`.

    `out` must be a new file (or `force`), never one of a run folder's own files; it is
    written whole under a temporary name and renamed, so a failure leaves nothing half-written.

    Raises:
        ValueError: `out` is not a new file; `run_dir` holds no run, or a run without ReDuMix
            records; an unknown rule.
    """
    if rule not in RULES:
        raise ValueError(unknown_name_message("harvest rule", rule, RULES))
    out = check_new_file(out, "--out", force=force)
    records = redumix_records(run_dir, "RUN_DIR", "harvest reads runs made with --decoder redumix")
    pairs, identical = select_pairs(records, rule)
    write_atomically(out, "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs))
    return HarvestSummary(records=len(records), pairs=len(pairs), identical=identical)


def redumix_records(run_dir: str | Path, param: str, fix: str) -> list[dict]:
    """The ReDuMix records of the run or sweep folder `run_dir` (notes on damaged lines go to stderr).

    Raises:
        ValueError: naming `param`, when the folder holds no run (no spec.json) or no ReDuMix
            record; `fix` ends the second message.
    """
    run = RunDir(run_dir)
    spec = run.read_spec()
    if spec is None:
        raise ValueError(f"{param} (={str(run_dir)!r}) holds no run (no spec.json); pass a folder written by "
                         "`redumix run` or `redumix sweep`")
    contents = run.read(grid_of(spec))
    for line in contents.notes():
        note(line)
    redumix = [r for r in contents.records if "stage1_completion" in r]
    records = [r for r in redumix if _pair_problem(r) is None]
    if len(records) < len(redumix):
        first = next(r for r in redumix if _pair_problem(r) is not None)
        note(f"{run.samples_path}: left out {len(redumix) - len(records)} ReDuMix records that cannot make a pair "
             f"(the first, problem {first.get('problem_id')!r}: {_pair_problem(first)})")
    if not redumix:
        raise ValueError(f"{param} (={str(run_dir)!r}) has no ReDuMix records ({len(contents.records)} records of "
                         f"other decoders); {fix}")
    if not records:
        raise ValueError(f"{param} (={str(run_dir)!r}) has no ReDuMix records that make pairs ({len(redumix)} "
                         "ReDuMix records, none with every field a pair needs; see the note above)")
    return records


# What a pair is made of: the record fields `_pair` reads, and their types.
PAIR_FIELDS: dict[str, type | tuple[type, ...]] = {
    "contexts": list, "completion": str, "stage1_completion": str, "answer": (str, type(None)), "correct": bool,
    "score": (int, float), "stage1_answer": (str, type(None)), "stage1_correct": bool,
    "lambda": (int, float, type(None)), "feedback_policy": (str, type(None)), "feedback": (str, type(None)),
    "reflection": (str, type(None)), "env": str, "problem_id": str, "gold": (str, type(None)), "model": str,
}


def _pair_problem(record: dict) -> str | None:
    """Why `record` cannot become a pair (a field missing or of another type); None when it can."""
    for name, kind in PAIR_FIELDS.items():
        if name not in record:
            return f"no {name}"
        if not isinstance(record[name], kind):
            return f"{name} is a {type(record[name]).__name__}"
    if len(record["contexts"]) < 2 or not all(isinstance(c, str) for c in record["contexts"][:2]):
        return "contexts does not hold the two prompts x and x2"
    return None


def _pair(record: dict) -> dict:
    return {
        "prompt": record["contexts"][0],
        "reflective_prompt": record["contexts"][1],  # x2: what GKD's teacher reads (`redumix distill`)
        "chosen": record["completion"],
        "rejected": record["stage1_completion"],
        "chosen_answer": record["answer"],
        "chosen_correct": record["correct"],
        "chosen_score": record["score"],
        "rejected_answer": record["stage1_answer"],
        "rejected_correct": record["stage1_correct"],
        "lambda": record["lambda"],
        "feedback_policy": record["feedback_policy"],
        "feedback": record["feedback"],
        "reflection": record["reflection"],
        "env": record["env"],
        "problem_id": record["problem_id"],
        "gold": record["gold"],
        "model": record["model"],
    }
