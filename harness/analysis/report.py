"""Reports of a run or sweep folder, from its files alone: summary.csv (one row per
group, every metric of `harness.analysis.metrics`), samples.csv (one row per record), the
same table as samples.parquet, and report.html, a single self-contained page (figures inlined
as PNG, no network).

The page is rendered by Jinja2 with auto-escaping, and the per-sample data rides in
a JSON script block that the browser fills in as text, so model outputs full of `<`
and `&` can neither break the page nor inject markup.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment, FileSystemLoader, select_autoescape  # noqa: E402

from harness.analysis import metrics  # noqa: E402
from harness.analysis.paired import axis_columns, compare_to_reference, pareto_front  # noqa: E402
from harness.analysis.plots import group_label, png, series  # noqa: E402
from harness.analysis.plots import panels as panel_grid  # noqa: E402
from harness.analysis.token_view import token_view  # noqa: E402
from harness.methods.registry import contributions_of  # noqa: E402
from harness.runs.output_paths import write_all_atomically  # noqa: E402
from harness.runs.record_grid import grid_of  # noqa: E402
from harness.runs.store import RunDir, StoreContents  # noqa: E402

TEMPLATES = Path(__file__).parent / "templates"
SUMMARY_FILE, SAMPLES_CSV, HTML_FILE = "summary.csv", "samples.csv", "report.html"
COMPARISONS_CSV = "comparisons.csv"
CROSS_RUNS_CSV = "cross_runs.csv"  # a report over several runs: each run against the first
SAMPLES_PARQUET = "samples.parquet"
# What the per-sample browser shows; long texts are cut for the page (samples.csv has them whole).
# What the per-sample browser shows of every record; beside these, each sample's grid values
# ("lam=0.5 binary", from the declared axes) and the fields its method declares worth showing
# (`Contributions.shown_fields`: ReDuMix's stage-1 answer, feedback and reflection).
BROWSER_FIELDS = ["key", "run", "model", "env_label", "decoder_label", "seed", "problem_id", "question", "gold",
                  "answer", "completion", "score", "correct", "format_ok"]
TEXT_LIMIT = 4000
# Beside those, each sample's `tokens`: its answer token by token with per-step statistics,
# for records saved with --save-steps (`harness.analysis.token_view`), cut at TEXT_LIMIT too.


@dataclass(frozen=True)
class Report:
    summary_csv: Path
    samples_csv: Path
    html: Path
    summary: pd.DataFrame
    notes: tuple[str, ...] = ()  # lines skipped, duplicates ignored, an incomplete sweep: also shown on the page
    comparisons_csv: Path | None = None
    cross_runs_csv: Path | None = None  # a report over several runs: each run against the first
    samples_parquet: Path | None = None  # samples.csv's table, typed (see `parquet_bytes`)


def read_folder(run_dir: str | Path) -> tuple[pd.DataFrame, StoreContents, dict]:
    """(records that count as a table, what was read and skipped, the spec) of a run or sweep folder.

    Records are read strictly (see `harness.runs.store`): a line that is not a record of the
    folder's grid, or repeats one, is left out and listed, never counted.

    Raises:
        ValueError: the folder is missing, its spec is corrupt, or it has no records.
    """
    store = RunDir(run_dir)
    if not store.path.is_dir():
        raise ValueError(f"RUN_DIR (={str(store.path)!r}) is not a folder; give a folder written by "
                         "`redumix sweep` or `redumix run`")
    spec = store.read_spec()
    contents = store.read(grid_of(spec))
    if not contents.records:
        held = f" ({'; '.join(contents.notes())})" if contents.skipped else ""
        raise ValueError(f"run folder (={str(store.path)!r}) holds no records{held}; give a folder written by "
                         "`redumix sweep` or `redumix run`")
    return pd.DataFrame.from_records(contents.records), contents, spec or {}


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """Every record that counts in a run or sweep folder, as a table (see `read_folder`)."""
    return read_folder(run_dir)[0]


@dataclass(frozen=True)
class FolderAnalysis:
    """What a report computes from one run or sweep folder."""

    records: pd.DataFrame  # as read
    table: pd.DataFrame  # normalised (`metrics.normalize`): every group column filled
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    spec: dict
    reference: str | None
    notes: tuple[str, ...]


def analyse_folder(run_dir: str | Path, seed: int = 0, ks: tuple[int, ...] | None = None) -> FolderAnalysis:
    """Read a folder and compute its summary and paired comparisons (see `read_folder`); `ks`: the
    k of pass@k and maj@k (see `metrics.summarize`)."""
    records, contents, spec = read_folder(run_dir)
    notes = tuple(contents.notes()) + ((contents.progress_note() + " (run the same command again to finish)",)
                                       if contents.progress_note() else ())
    reference = reference_label(spec)
    table = metrics.normalize(records)
    comparisons = compare_to_reference(table, reference, seed=seed)
    summary = metrics.summarize(records, seed=seed, reference=reference, comparisons=comparisons, ks=ks)
    return FolderAnalysis(records, table, summary, comparisons, spec, reference, notes)


def write_report(run_dir: str | Path, seed: int = 0, ks: tuple[int, ...] | None = None) -> Report:
    """Write summary.csv, samples.csv, samples.parquet, comparisons.csv and report.html into
    `run_dir`; `seed` drives the bootstrap (see `write_files`), `ks` names the k of pass@k and
    maj@k (None: each method's default)."""
    folder = Path(run_dir)
    found = analyse_folder(folder, seed=seed, ks=ks)
    html = render_html(found.summary, found.table, found.spec, title=folder.name, notes=found.notes,
                       reference=found.reference, comparisons=found.comparisons)
    return write_files(folder, found.summary, found.records, found.comparisons, html, found.notes)


def write_files(folder: Path, summary: pd.DataFrame, records: pd.DataFrame, comparisons: pd.DataFrame, html: str,
                notes=(), cross_runs: pd.DataFrame | None = None) -> Report:
    """Write a report's files into `folder` (cross_runs.csv only for a report over several runs).

    The files are written to temporary names first and renamed only when all are
    written, so a failure (or a kill) never leaves a half-written or mismatched set.
    """
    paths = Report(folder / SUMMARY_FILE, folder / SAMPLES_CSV, folder / HTML_FILE, summary, tuple(notes),
                   folder / COMPARISONS_CSV, None if cross_runs is None else folder / CROSS_RUNS_CSV,
                   folder / SAMPLES_PARQUET)
    samples = _flat(records)
    contents = {
        paths.summary_csv: summary.to_csv(index=False),
        paths.samples_csv: samples.to_csv(index=False),
        paths.samples_parquet: parquet_bytes(samples),
        paths.comparisons_csv: comparisons.to_csv(index=False),
        paths.html: html,
    }
    if cross_runs is not None:
        contents[paths.cross_runs_csv] = cross_runs.to_csv(index=False)
    write_all_atomically(contents)
    return paths


def reference_label(spec: dict) -> str | None:
    """The decoder label costs are compared against: the sweep's `reference` (its first
    single-pass decoder unless the config names one); for specs written before sweeps
    recorded it, the first decoder that lists no grid beside its config. None for a run."""
    from harness.methods.registry import axes_of

    if "reference" in spec:
        return spec["reference"]
    entries = (spec.get("sweep") or {}).get("decoders") or []
    return next((d["label"] for d in entries
                 if not any(d.get(key) for key in axes_of(d["name"]).listed_beside_config())), None)


def render_html(summary: pd.DataFrame, records: pd.DataFrame, spec: dict, title: str, notes=(),
                reference: str | None = None, comparisons: pd.DataFrame | None = None,
                cross_runs: pd.DataFrame | None = None) -> str:
    """The report page as one string (see the module docstring). `cross_runs`: for a report
    over several runs, `paired.compare_across_runs` of their records."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    shown = {"reference": reference or "none"}
    own = [(f.title.format(**shown), f.draw(summary, records, reference), f.caption.format(**shown))
           for f in metrics.contributed().figures]
    general = [
        (f"Paired differences against {reference}", forest_figure(comparisons),
         f"Accuracy minus {reference}'s on the same problems (seeds pooled as separate problems), with a paired "
         "bootstrap 95% interval; * marks McNemar's exact p < 0.05, and wins/losses count the discordant pairs."),
        ("Accuracy vs each variant", variant_figure(summary, reference),
         "Strict accuracy with 95% Wilson intervals along each variant axis without a column of its own "
         f"(Gumbel's tau, self-consistency's n); the reference, {reference or 'none'}, dashed."),
        (f"Cost against {reference}", overhead_figure(summary),
         f"Mean compute seconds per answer (batching amortised, every stage included) over {reference}'s."),
        ("Accuracy against cost", accuracy_cost_figure(summary, reference),
         f"Each group's accuracy (95% Wilson interval) at its compute per answer relative to {reference}'s: "
         "methods at equal cost stand one above the other (e.g. ReDuMix beside self-consistency); the dashed "
         "line is the Pareto frontier, the groups no other beats on both."),
    ]
    # The methods' own figures lead (accuracy along their axes), then the comparisons every report has.
    every = own[:1] + general[:1] + own[1:] + general[1:]
    figures = [fig for fig in every if fig[1] is not None]
    missing_figures = len(every) - len(figures)
    across = forest_figure(cross_runs, label=_cross_label)
    if across is not None:  # only a report over several runs has it
        base = _base_run(cross_runs)
        figures.insert(0, (f"Paired differences across runs, against {base}", across,
                           f"Each run's accuracy minus {base}'s for the same decoder variant on the problems both "
                           "runs answered (same env item, seed and question), with a paired bootstrap 95% interval; "
                           "* marks McNemar's exact p < 0.05, and wins/losses count the discordant pairs."))
    columns = [c for c in ["run", *metrics.summary_columns(summary.columns)]
               if c in summary and summary[c].notna().any()]
    rows = [[_cell(row[c]) for c in columns] for _, row in summary.iterrows()]
    samples = [browser_sample(r) for r in records.to_dict("records")]
    return env.get_template("report.html.j2").render(
        title=title, figures=figures, columns=columns, rows=rows, samples=samples,
        spec=json.dumps(spec, indent=2, sort_keys=True), n_records=len(records), n_groups=len(summary),
        missing_figures=missing_figures, notes=list(notes), runs="run" in records,
    )


def browser_sample(record: dict) -> dict:
    """One record as the page's sample browser shows it (long texts cut at TEXT_LIMIT)."""
    grid = group_label(record | {"decoder_label": ""}).strip()
    shown = [[label, _json_value(record.get(field))]
             for field, label in contributions_of(str(record.get("decoder"))).shown_fields
             if _json_value(record.get(field)) is not None]
    return ({k: _json_value(record.get(k)) for k in BROWSER_FIELDS}
            | {"grid": grid or "-", "shown": shown, "tokens": token_view(record.get("steps"), TEXT_LIMIT)})


def _variant_lines(panel: pd.DataFrame):
    """(axis, line name, rows sorted by value) for groups with a numeric variant in the `variant`
    column ("tau=0.5"), one line per decoder label and value of the axis columns."""
    rows = panel[panel["variant"].notna()] if "variant" in panel else panel.iloc[0:0]
    parts = rows["variant"].astype(str).str.split("=", n=1, expand=True) if len(rows) else None
    if parts is None or parts.shape[1] < 2:
        return []
    rows = rows.assign(axis=parts[0], value=pd.to_numeric(parts[1], errors="coerce")).dropna(subset=["value"])
    out = []
    others = [c for c in axis_columns() if c != "variant" and c in rows]
    for (axis, label, *rest), line in rows.groupby(["axis", "decoder_label", *(rows[c].fillna("") for c in others)],
                                                   sort=True):
        shown = " ".join(str(v) for v in rest if v != "")
        out.append((axis, f"{label} [{shown}]" if shown else label, line.sort_values("value")))
    return out


def variant_figure(summary: pd.DataFrame, reference: str | None = None) -> str | None:
    panels = []
    for title, panel in series(summary):
        lines = _variant_lines(panel)
        for axis in sorted({a for a, _, _ in lines}):
            panels.append((f"{title}: {axis}", panel, [(name, line) for a, name, line in lines if a == axis]))
    if not panels:
        return None
    fig, axes = panel_grid(len(panels))
    for ax, (title, panel, lines) in zip(axes, panels, strict=False):
        for name, line in lines:
            ax.plot(line["value"], line["accuracy"], marker="o", label=name)
            ax.fill_between(line["value"], line["accuracy_lo"], line["accuracy_hi"], alpha=0.2)
        for _, row in panel[(panel["decoder_label"] == reference) & panel["variant"].isna()].iterrows():
            ax.axhline(row["accuracy"], linestyle="--", color="black",
                       label=f"{group_label(row)} ({row['n']} answers)")
        axis = title.rsplit(": ", 1)[1]
        ax.set(title=title, xlabel=axis, ylabel="accuracy", ylim=(-0.02, 1.02))
        if axis == "n":
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    return png(fig)


def forest_figure(comparisons: pd.DataFrame | None, label=None) -> str | None:
    """Paired accuracy differences with their intervals, one panel per (run,) model and env;
    `label(row)` names a row (default: its group)."""
    if comparisons is None or comparisons["accuracy_diff"].notna().sum() == 0:
        return None
    label = label or group_label
    comparisons = comparisons[comparisons["accuracy_diff"].notna()]
    panels = list(series(comparisons))
    fig, axes = panel_grid(len(panels), cols=1, width=9, height=0.9 + 0.32 * max(len(p) for _, p in panels))
    for ax, (title, panel) in zip(axes, panels, strict=False):
        y = list(range(len(panel)))[::-1]
        err = [panel["accuracy_diff"] - panel["accuracy_diff_lo"], panel["accuracy_diff_hi"] - panel["accuracy_diff"]]
        ax.errorbar(panel["accuracy_diff"], y, xerr=err, fmt="o", capsize=3)
        ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
        labels = [f"{label(row)}{' *' if row['mcnemar_p'] < 0.05 else ''}  (+{row['wins']}/-{row['losses']})"
                  for _, row in panel.iterrows()]
        ax.set_yticks(y, labels, fontsize=7)
        ax.set(title=title, xlabel="accuracy difference (paired)", xlim=(-1.02, 1.02))
    fig.tight_layout()
    return png(fig)


def overhead_figure(summary: pd.DataFrame) -> str | None:
    panels = [(t, p) for t, p in series(summary) if p["overhead_vs_greedy"].notna().any()]
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), cols=1, width=9)
    for ax, (title, panel) in zip(axes, panels, strict=False):
        panel = panel[panel["overhead_vs_greedy"].notna()]
        labels = [group_label(row) for _, row in panel.iterrows()]
        ax.bar(range(len(panel)), panel["overhead_vs_greedy"], color="tab:blue")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(panel)), labels, rotation=30, ha="right", fontsize=7)
        ax.set(title=title, ylabel="cost per answer / greedy's")
    fig.tight_layout()
    return png(fig)


def accuracy_cost_figure(summary: pd.DataFrame, reference: str | None) -> str | None:
    """Accuracy against compute per answer (relative to the reference), one point per group, with
    the Pareto frontier (no other group both cheaper and more accurate) drawn through them."""
    panels = [(t, p) for t, p in series(summary) if p["overhead_vs_greedy"].notna().sum() >= 2]
    if not panels:
        return None
    fig, axes = panel_grid(len(panels))
    for ax, (title, panel) in zip(axes, panels, strict=False):
        panel = panel[panel["overhead_vs_greedy"].notna()]
        seen: dict[float, int] = {}
        for _, row in panel.iterrows():
            cost = float(row["overhead_vs_greedy"])
            # Groups of one method share its cost (ReDuMix's lambdas): spread them a little to keep each readable.
            nudge = 1 + 0.015 * seen.setdefault(round(cost, 3), 0)
            seen[round(cost, 3)] += 1
            err = [[row["accuracy"] - row["accuracy_lo"]], [row["accuracy_hi"] - row["accuracy"]]]
            ax.errorbar(cost * nudge, row["accuracy"], yerr=err, fmt="o", capsize=3,
                        color="black" if row["decoder_label"] == reference else None, label=group_label(row))
        front = pareto_front(panel["overhead_vs_greedy"].tolist(), panel["accuracy"].tolist())
        ax.step(panel["overhead_vs_greedy"].iloc[front], panel["accuracy"].iloc[front], where="post", color="grey",
                linestyle="--", linewidth=1, label="frontier")
        ax.set(title=title, xlabel=f"compute per answer / {reference}'s (log scale)", ylabel="accuracy",
               ylim=(-0.02, 1.02))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=6)
    return png(fig)


def _base_run(cross_runs: pd.DataFrame | None) -> str | None:
    return None if cross_runs is None or cross_runs.empty else str(cross_runs["base_run"].iloc[0])


def _cross_label(row) -> str:
    """A cross-run row: its group, and the base run's model when that is another one."""
    other = "" if row["base_model"] == row["model"] else f" vs {Path(str(row['base_model'])).name}"
    return group_label(row) + other


def _cell(value) -> dict:
    """A summary-table cell: the text shown and the value it sorts by."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"text": "", "sort": ""}
    if isinstance(value, float):
        return {"text": f"{value:.4g}", "sort": value}
    if isinstance(value, int):
        return {"text": str(value), "sort": value}
    return {"text": str(value), "sort": str(value)}


def _json_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and len(value) > TEXT_LIMIT:
        return value[:TEXT_LIMIT] + f" [... {len(value) - TEXT_LIMIT} more characters in samples.csv]"
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _flat(records: pd.DataFrame) -> pd.DataFrame:
    """Records for CSV: nested values (contexts, decoder configs) as JSON text."""
    out = records.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, list | dict)).any():
            out[column] = out[column].map(lambda v: json.dumps(v) if isinstance(v, list | dict) else v)
    return out


def parquet_bytes(samples: pd.DataFrame) -> bytes:
    """samples.csv's table (`_flat` records) as a Parquet file, for `pd.read_parquet`.

    The same rows, columns and values as samples.csv, with their types kept: numbers stay
    numbers, booleans booleans, missing values null. Nested values (contexts, decoder configs,
    per-step arrays) stay JSON text, as in samples.csv, since records of different decoders nest
    different shapes that no single Parquet column type holds; `df[column].map(json.loads)`
    turns a cell back into its list or dict. A column whose values mix types (an answer that
    is a number in one environment and text in another) is stored as text, as samples.csv
    writes it.
    """
    import pyarrow as pa

    table = samples.copy()
    for column in table.columns:
        if table[column].dtype == object:
            try:
                pa.array(table[column], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table[column] = table[column].map(lambda v: v if _missing(v) else str(v))
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shown(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a plain-text table for the terminal (every column is in summary.csv)."""
    table = pd.DataFrame({"env": summary["env_label"], "decoder": summary["decoder_label"]})
    for column in axis_columns():  # the grid axes the groups have values on (lambda, feedback policy, variant)
        if column in summary and summary[column].notna().any():
            table[column] = summary[column].map(_shown)
    table["n"] = summary["n"]
    table["accuracy [95% CI]"] = [f"{a:.3f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in
                                  zip(summary["accuracy"], summary["accuracy_lo"], summary["accuracy_hi"], strict=True)]
    for block in metrics.contributed().columns:  # the methods' own columns, where a group has them
        for column in block.terminal:
            if column in summary and summary[column].notna().any():
                table[column] = summary[column].map(_shown)
    table["p50 s"] = summary["latency_p50_s"].map(lambda v: f"{v:.2f}")
    table["x greedy"] = summary["overhead_vs_greedy"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    if summary["model"].nunique() > 1:
        table.insert(0, "model", summary["model"].map(lambda m: Path(str(m)).name))
    if "run" in summary:
        table.insert(0, "run", summary["run"])
    return table.to_string(index=False)
