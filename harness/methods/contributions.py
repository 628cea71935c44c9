"""What a decoder or method adds to its records and to reports, declared where it is registered.

Every record has the core fields (`harness.runs.records`); a method's own fields come with
their types here, and it may not set a core field. Reports build their summary columns and
figures from the contributions of the methods whose records a folder holds, so adding a
method never edits the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NUMBER = (int, float)


@dataclass(frozen=True)
class SummaryColumns:
    """Columns of the summary table, computed per group from the group's records.

    Attributes:
        columns: the column names, in the order summary.csv shows them.
        compute: a group's records (a pandas DataFrame) -> {column: value}; called only for
            groups of the methods that contribute it, other groups get NaN.
        reads: record fields `compute` reads; they are filled with None where a record lacks them.
        terminal: the columns also shown in the terminal's summary table (`redumix report`).
    """

    columns: tuple[str, ...]
    compute: Callable[[Any], dict]
    reads: tuple[str, ...] = ()
    terminal: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report page.

    Attributes:
        title: shown above it; "{reference}" stands for the reference decoder's label.
        draw: (summary table, records table, reference label or None) -> a PNG as base64 text,
            or None when the folder has nothing to draw.
        caption: shown below it; "{reference}" as in `title`.
    """

    title: str
    draw: Callable[[Any, Any, str | None], str | None]
    caption: str


@dataclass(frozen=True)
class Contributions:
    """A decoder's or method's additions (see the module docstring).

    Attributes:
        record_fields: field name -> type (or tuple of types) of every field its records add;
            a value may also be null.
        columns: its summary columns.
        figures: its report figures.
        graded_fields: fields only a verifier fills (a first attempt's correctness); shown as
            null where no environment graded the answers (lm-eval tasks of their own).
        shown_fields: (field, label) pairs the report's sample browser shows and searches for each
            of its records (ReDuMix's first attempt, feedback and reflection).
        stage_fields: fields of seconds spent before the final decoding (ReDuMix's stages 1-3),
            summed as the stage time of records written before `stage_s` was recorded.
        run_lines: a run's new records -> lines `redumix run` prints under its accuracy (e.g.
            the first attempts' accuracy); None: none.
    """

    record_fields: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    columns: tuple[SummaryColumns, ...] = ()
    figures: tuple[ReportFigure, ...] = ()
    graded_fields: tuple[str, ...] = ()
    shown_fields: tuple[tuple[str, str], ...] = ()
    stage_fields: tuple[str, ...] = ()
    run_lines: Callable[[list[dict]], list[str]] | None = None

    def __add__(self, other: Contributions) -> Contributions:
        """Both sets: the fields of both, columns and figures of both in order (each once)."""
        return Contributions(
            record_fields={**self.record_fields, **other.record_fields},
            columns=tuple(dict.fromkeys((*self.columns, *other.columns))),
            figures=tuple(dict.fromkeys((*self.figures, *other.figures))),
            graded_fields=tuple(dict.fromkeys((*self.graded_fields, *other.graded_fields))),
            shown_fields=tuple(dict.fromkeys((*self.shown_fields, *other.shown_fields))),
            stage_fields=tuple(dict.fromkeys((*self.stage_fields, *other.stage_fields))),
            run_lines=other.run_lines or self.run_lines,
        )


NOTHING = Contributions()
