"""One report over several run or sweep folders: different models, a distilled model against
its base, a GPU run against a CPU run.

Each run's numbers are computed exactly as its own report computes them (its reference, its
paired comparisons) and stacked with a `run` column. On top, every run after the first is
compared with the first, the base, variant by variant on the problems both answered
(`paired.compare_across_runs`); runs that share no problem with the base are shown side by
side without pairing, and the report says so. Nothing is written into the run folders.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.paired import compare_across_runs
from harness.analysis.report import Report, analyse_folder, render_html, write_files


def run_labels(folders: list[Path]) -> list[str]:
    """A short, distinct name per folder: its name, or the path given when two share a name."""
    names = [f.name or str(f) for f in folders]
    return [name if names.count(name) == 1 else str(folder) for name, folder in zip(names, folders, strict=True)]


def write_joined_report(run_dirs: list[str | Path], out: str | Path, seed: int = 0,
                        ks: tuple[int, ...] | None = None) -> Report:
    """Write summary.csv, samples.csv, samples.parquet, comparisons.csv, cross_runs.csv and report.html of
    `run_dirs` together into `out` (see the module docstring); `seed` drives the bootstraps, `ks`
    names the k of pass@k and maj@k (None: each method's default).

    Raises:
        ValueError: a folder is given twice, `out` is one of the runs or another run's folder,
            or a run folder cannot be read (the message names it).
    """
    folders = [Path(d) for d in run_dirs]
    out = Path(out)
    _check_folders(folders, out)
    labels = run_labels(folders)
    found = [analyse_folder(folder, seed=seed, ks=ks) for folder in folders]

    def stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
        parts = [frame.assign(run=label) for label, frame in zip(labels, frames, strict=True) if not frame.empty]
        joined = pd.concat(parts, ignore_index=True) if parts else frames[0].assign(run=None)
        return joined[["run", *[c for c in joined.columns if c != "run"]]]

    summary = stacked([f.summary for f in found])
    table = stacked([f.table for f in found])
    records = stacked([f.records for f in found])
    comparisons = stacked([f.comparisons for f in found])
    cross = compare_across_runs(table, labels[0], seed=seed)
    notes = [f"{label}: {note}" for label, f in zip(labels, found, strict=True) for note in f.notes]
    if len(labels) > 1:
        notes.append(f"The runs are compared with the first, {labels[0]}, on the problems both answered.")
    notes += [f"{label} shares no problem with {labels[0]}: shown side by side, without paired comparisons."
              for label in labels[1:] if not (cross.loc[cross["run"] == label, "pairs"] > 0).any()]
    spec = {label: f.spec for label, f in zip(labels, found, strict=True)}
    html = render_html(summary, table, spec, title=" vs ".join(labels), notes=notes, reference=found[0].reference,
                       comparisons=comparisons, cross_runs=cross)
    out.mkdir(parents=True, exist_ok=True)
    return write_files(out, summary, records, comparisons, html, notes, cross_runs=cross)


def _check_folders(folders: list[Path], out: Path) -> None:
    resolved = [f.resolve() for f in folders]
    for i, folder in enumerate(resolved):
        if folder in resolved[:i]:
            raise ValueError(f"RUN_DIR (={str(folders[i])!r}) is given twice; give each run once")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out (={str(out)!r}) is a file; give a folder for the report (it is created if missing)")
    if out.resolve() in resolved:
        raise ValueError(f"--out (={str(out)!r}) is one of the runs; a joined report goes to a folder of its own, "
                         "e.g. results/compare")
    if any((out / name).exists() for name in ("samples.jsonl", "spec.json")):
        raise ValueError(f"--out (={str(out)!r}) holds a run of its own; give an empty or new folder")
