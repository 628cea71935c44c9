"""Which records a run or sweep folder is meant to hold, computed from its spec alone.

A record's identity is its sweep `key` (model|env|problem|decoder|lambda|seed|policy),
or, in a `redumix run` folder, its problem and lambda. The grid of a spec is the set
of identities its config asks for: reading a folder counts a record only when its
identity is in the grid, and only once; resuming decodes exactly the missing ones.
Problem ids are deterministic ("<env>-s<seed>-<index>"), so no problem is generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.base import problem_id


def record_key(model: str, env: str, problem: str, decoder: str, lam: float | None, seed: int,
               feedback: str | None) -> str:
    """A sweep record's identity, e.g. 'smollm2-135m|basic_arithmetic|basic_arithmetic-s0-3|redumix|0.5|0|binary'."""
    return "|".join([model, env, problem, decoder, _lam_part(lam), str(seed), feedback or "-"])


def run_record_identity(problem: str, lam: float | None) -> str:
    """A `redumix run` record's identity: its problem and, for mixing decoders, its lambda."""
    return f"{problem}|{_lam_part(lam)}"


def record_identity(record: dict) -> str:
    """The identity of a record already checked by `harness.runs.record_schema`."""
    if "key" in record:
        return record["key"]
    return run_record_identity(record["problem_id"], record.get("lambda"))


@dataclass(frozen=True)
class Grid:
    """The identities of every record a spec asks for."""

    expected: frozenset[str]
    kind: str  # "sweep" or "run"

    def __contains__(self, identity: str) -> bool:
        return identity in self.expected

    def __len__(self) -> int:
        return len(self.expected)


def sweep_grid(resolved: dict) -> Grid:
    """The grid of a sweep's resolved config (`SweepConfig.resolved()`, as spec.json stores it)."""
    keys = set()
    for model in resolved["models"]:
        for env in resolved["envs"]:
            for seed in resolved["seeds"]:
                problems = [problem_id(env["name"], seed, i) for i in range(env["n"])]
                for dec in resolved["decoders"]:
                    for policy in dec["feedback"] or (None,):
                        for lam in dec["lambdas"] or (None,):
                            keys.update(record_key(model, env["label"], p, dec["label"], lam, seed, policy)
                                        for p in problems)
    return Grid(frozenset(keys), "sweep")


def run_grid(run: dict) -> Grid:
    """The grid of a `redumix run` spec (spec.json's "run"): its problems under each lambda it decodes."""
    lam = (run.get("decoder_config") or {}).get("lam")
    lambdas = [None] if lam is None else (lam if isinstance(lam, list) else [lam])
    problems = [problem_id(run["env"], run["seed"], i) for i in range(run["n"])]
    return Grid(frozenset(run_record_identity(p, x) for p in problems for x in lambdas), "run")


def grid_of(spec: dict | None) -> Grid | None:
    """The grid of a folder's spec.json; None when there is no spec (nothing to check against)."""
    if spec is None:
        return None
    if "sweep" in spec:
        return sweep_grid(spec["sweep"])
    return run_grid(spec["run"])


def _lam_part(lam: float | None) -> str:
    return "-" if lam is None else repr(float(lam))
