"""A method registered from outside the package runs everywhere a built-in one does.

The toy method below lives in this file only: it declares a variant axis (`k`, decoded
together) and a unit axis (`style`, one unit each), its own record field, summary column
and report figure. Sweeps, resume, the report and lm-eval must all take it without any
file of the package naming it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pandas as pd
import pytest

from decoders.registry import register_method, unregister
from harness.methods import get_method
from harness.methods.axes import Axes, Axis
from harness.methods.base import DecoderMethod, pending, variant_key
from harness.methods.contributions import Contributions, ReportFigure, SummaryColumns
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import ConfigError, parse_config
from tests.helpers.lm_eval import evaluate, local_sums_task
from tests.helpers.sweeps import EASY


@dataclass(frozen=True)
class Toy:
    """Greedy answers, tagged: `k` (one value or several, decoded together) and a `style`."""

    k: int | tuple[int, ...] = 1
    style: str = "plain"

    def __post_init__(self) -> None:
        if isinstance(self.k, list):
            object.__setattr__(self, "k", tuple(self.k))

    def config(self) -> dict:
        config = dataclasses.asdict(self)
        if isinstance(self.k, tuple):
            config["k"] = list(self.k)
        return config


class ToyMethod(DecoderMethod):
    """Decodes greedily once per problem and gives every k the same answer, with `toy_value` = k."""

    @classmethod
    def axes(cls, config: type) -> Axes:
        return Axes(variants=(Axis("k", "k", kind=int),),
                    units=(Axis("style", "toy_style", sweep_key="styles", kind=str, example="[plain, fancy]"),))

    def variants(self) -> list[dict]:
        return [{"k": k} for k in self.decoder.k] if isinstance(self.decoder.k, tuple) else [{}]

    def solve(self, env, models, problems, gen, *, skip=frozenset(), cache=None, given=None):
        variants = self.variants()
        problems = pending(problems, skip, variants)
        greedy = get_method("greedy").solve(env, models, problems, gen, cache=cache, given=given)
        out = []
        for attempt in greedy:
            for variant in variants:
                if (attempt.problem.problem_id, variant_key(variant)) in skip:
                    continue
                k = variant.get("k", self.decoder.k)
                out.append(dataclasses.replace(
                    attempt, variant=variant, method=self.name, method_config=self.config() | {"k": k},
                    extras={"toy_value": k, "toy_style": self.decoder.style}))
        return out


def toy_mean(group: pd.DataFrame) -> dict:
    return {"toy_mean": float(group["toy_value"].mean())}


def toy_figure(summary, records, reference):
    from harness.analysis.plots import panels, png

    if "toy_mean" not in summary or summary["toy_mean"].isna().all():
        return None
    fig, (ax,) = panels(1)
    ax.bar(range(len(summary)), summary["toy_mean"].fillna(0))
    return png(fig)


TOY = Contributions(record_fields={"toy_value": int},
                    columns=(SummaryColumns(("toy_mean",), toy_mean, reads=("toy_value",)),),
                    figures=(ReportFigure("Toy values", toy_figure, "Mean k of each group."),))


@pytest.fixture
def toy():
    register_method("toy", config=Toy, contributes=TOY)(ToyMethod)
    yield
    unregister("toy")


def _config(model_dir, **entry) -> dict:
    return {"models": [str(model_dir)], "seeds": [0], "max_new_tokens": 6, "batch_size": 2,
            "envs": [{"name": "basic_arithmetic", "n": 2, "config": dict(EASY)}],
            "decoders": [{"name": "greedy"}, {"name": "toy", "styles": ["plain", "fancy"], "config": {"k": [1, 3]}}
                         | entry]}


def test_a_sweep_runs_a_registered_method_over_its_own_axes_and_resumes(toy, tiny_model_dir, tmp_path):
    config = parse_config(_config(tiny_model_dir))
    out = tmp_path / "sweep"
    result = run_sweep(config, out, progress=False)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    toys = [r for r in records if r["decoder"] == "toy"]
    # 2 problems x 2 styles (units) x 2 values of k (variants of one unit).
    assert result.total == 2 + 8 and len(toys) == 8
    assert {(r["toy_style"], r["variant"]["k"]) for r in toys} == {(s, k) for s in ("plain", "fancy") for k in (1, 3)}
    assert {r["key"].split("|")[-1] for r in toys} == {"plain", "fancy"}  # the unit axis is the key's last part
    assert {r["key"].split("|")[4] for r in toys} == {"k=1", "k=3"}
    assert all(r["toy_value"] == r["variant"]["k"] for r in toys)

    again = run_sweep(parse_config(_config(tiny_model_dir)), out, progress=False)
    assert again.new == 0 and again.total == result.total

    summary = pd.read_csv(out / "summary.csv")
    toy_rows = summary[summary["decoder"] == "toy"]
    assert sorted(toy_rows["toy_mean"]) == [1.0, 1.0, 3.0, 3.0] and summary.loc[
        summary["decoder"] == "greedy", "toy_mean"].isna().all()
    html = (out / "report.html").read_text()
    assert "Toy values" in html and "Mean k of each group." in html


def test_a_registered_method_gets_the_same_config_checks(toy, tiny_model_dir):
    with pytest.raises(ConfigError, match=r"decoders\[1\]\.lambdas .*'toy' takes no `lambdas`"):
        parse_config(_config(tiny_model_dir, lambdas=[0.5]))
    with pytest.raises(ConfigError, match=r"decoders\[1\]\.styles\[0\] \(=3\) is not a name"):
        parse_config(_config(tiny_model_dir, styles=[3]))


def test_a_method_may_not_overwrite_a_core_record_field(toy, tiny_model_dir, tmp_path, monkeypatch):
    original = ToyMethod.solve

    def overwriting(self, *args, **kwargs):
        attempts = original(self, *args, **kwargs)
        return [dataclasses.replace(a, extras=a.extras | {"correct": True}) for a in attempts]

    monkeypatch.setattr(ToyMethod, "solve", overwriting)
    with pytest.raises(ValueError, match="method 'toy' sets the record field.*correct"):
        run_sweep(parse_config(_config(tiny_model_dir)), tmp_path / "s", progress=False)


def test_lm_eval_generates_with_a_registered_method(toy, tiny_model_dir, tmp_path):
    task = local_sums_task(tmp_path)
    toy_run = evaluate({"model": str(tiny_model_dir), "decoder": "toy", "k": 2}, [task])
    greedy = evaluate({"model": str(tiny_model_dir), "decoder": "greedy"}, [task])
    assert [s["resps"] for s in toy_run["samples"]["local_sums"]] == [
        s["resps"] for s in greedy["samples"]["local_sums"]]
