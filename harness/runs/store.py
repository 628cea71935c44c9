"""Run directories: the resolved spec and an append-only JSONL of records.

Records are appended and flushed as each batch finishes, so a crash loses at most
the batch in flight; signals wait until an append is complete, so an interrupt never
tears a line. A torn last line (a crash mid-write) is cut off before the next append.

Reading is strict (`RunDir.read`): each line is decoded on its own, checked against
the record schema (`harness.runs.record_schema`) and the spec's grid (`harness.runs.record_grid`),
and counted once by identity (the first copy). Everything left out is listed with its
line number, so one bad line never hides the rest and never counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.methods.base import variant_key
from harness.runs.added_settings import with_added_settings
from harness.runs.record_grid import Grid, grid_of, record_identity, record_variant
from harness.runs.record_json import dumps_record, loads_line
from harness.runs.record_schema import record_problem
from harness.runs.signals import signals_deferred

SPEC_FILE = "spec.json"
SAMPLES_FILE = "samples.jsonl"
SHOWN_SKIPS = 10  # lines named one by one in a note; the rest are counted


@dataclass(frozen=True)
class SkippedLine:
    line: int  # 1-based line number in samples.jsonl
    reason: str


@dataclass
class StoreContents:
    """What a samples.jsonl holds: the records that count, and every line that does not."""

    path: Path
    records: list[dict] = field(default_factory=list)  # valid, in the grid, first copy only
    skipped: list[SkippedLine] = field(default_factory=list)  # torn, undecodable, not a record, outside the grid
    duplicates: list[SkippedLine] = field(default_factory=list)  # later copies of a counted record
    expected: int | None = None  # records the spec asks for (None: no spec to say)

    @property
    def identities(self) -> set[str]:
        return {record_identity(r) for r in self.records}

    @property
    def complete(self) -> bool:
        return self.expected is None or len(self.records) >= self.expected

    def notes(self) -> list[str]:
        """One line per kind of problem, naming the file and line numbers; empty when all is well."""
        out = []
        if self.skipped:
            out.append(f"{self.path}: skipped {_count(len(self.skipped), 'line')} that are not counted "
                       f"({_listing(self.skipped)})")
        if self.duplicates:
            out.append(f"{self.path}: ignored {_count(len(self.duplicates), 'duplicate record')}, "
                       f"the first copy counts ({_listing(self.duplicates)})")
        return out

    def progress_note(self) -> str | None:
        """'incomplete: 40 of 54 records' when the spec asks for more than the folder holds."""
        if self.complete:
            return None
        return f"incomplete: {len(self.records)} of {self.expected} records"


class RunDir:
    """One run's (or sweep's) folder on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spec_path = self.path / SPEC_FILE
        self.samples_path = self.path / SAMPLES_FILE

    def read_spec(self) -> dict | None:
        """The folder's spec, or None when it has none; decoder settings added since it was
        written read as their defaults (`harness.runs.added_settings`).

        Raises:
            ValueError: spec.json is unreadable, not JSON, or not a run or sweep spec.
        """
        if not self.spec_path.exists():
            return None
        fix = (f"restore it, or move it aside: a folder without {SPEC_FILE} is resumed when every record "
               "belongs to the config you give")
        try:
            spec = json.loads(self.spec_path.read_bytes().decode("utf-8"))
        except OSError as err:
            raise ValueError(f"{self.spec_path} cannot be read ({err.strerror})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{self.spec_path} is not UTF-8 text; {fix}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.spec_path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                             f"{err.msg}); {fix}") from None
        except (RecursionError, ValueError) as err:  # nested too deep; an integer too long to convert
            why = "nested too deep" if isinstance(err, RecursionError) else str(err).split(":", 1)[0]
            raise ValueError(f"{self.spec_path} is not a run or sweep spec ({why}); {fix}") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("sweep", spec.get("run")), dict):
            raise ValueError(f"{self.spec_path} is not a run or sweep spec (an object with a `run` or `sweep` "
                             f"entry); {fix}")
        try:
            grid_of(spec)
        except KeyError as err:
            raise ValueError(f"{self.spec_path} is not a complete run or sweep spec (no {err.args[0]!r} entry); "
                             f"{fix}") from None
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"{self.spec_path} is not a complete run or sweep spec (an entry has the wrong type); "
                             f"{fix}") from None
        # A spec from before a decoder setting existed reads as having it at its default (which
        # decodes as before), so the folder resumes under any config that leaves it there.
        return with_added_settings(spec)

    def write_spec(self, spec: dict) -> None:
        from harness.runs.output_paths import write_atomically

        self.path.mkdir(parents=True, exist_ok=True)
        write_atomically(self.spec_path, json.dumps(spec, indent=2, sort_keys=True) + "\n")

    def read(self, grid: Grid | None = None) -> StoreContents:
        """Every record that counts (see the module docstring); `grid`: what the spec asks for."""
        contents = StoreContents(path=self.samples_path, expected=None if grid is None else len(grid))
        if not self.samples_path.is_file():
            return contents
        data = self.samples_path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        first_line: dict[str, int] = {}
        sweep = grid.kind == "sweep" if grid is not None else None
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            record, reason = _parse(raw, sweep)
            if reason is None:
                identity = record_identity(record)
                if grid is not None and identity not in grid:
                    reason = f"outside the spec's grid ({_what(record, identity)})"
                elif identity in first_line:
                    contents.duplicates.append(SkippedLine(number, f"repeats line {first_line[identity]}"))
                    continue
            if reason is not None:
                contents.skipped.append(SkippedLine(number, reason))
                continue
            first_line[identity] = number
            contents.records.append(record)
        if torn.strip():
            contents.skipped.append(SkippedLine(len(lines) + 1, "torn (no newline: a write was interrupted)"))
        return contents

    def read_records(self, grid: Grid | None = None) -> list[dict]:
        """The records that count (see `read`)."""
        return self.read(grid).records

    def check_writable(self) -> None:
        """Fail now, before any work, if records could not be appended later."""
        if self.samples_path.exists():
            if not self.samples_path.is_file():
                raise ValueError(f"{self.samples_path} is not a file; move it aside so records can be written")
            try:
                with self.samples_path.open("ab"):
                    pass
            except OSError as err:
                raise ValueError(f"{self.samples_path} cannot be written ({err.strerror}); make it writable or "
                                 "choose another --out") from None

    def append(self, records: Iterable[dict]) -> None:
        """Append `records` whole, or none of them.

        Raises:
            OSError: naming samples.jsonl, when the batch cannot be written (a full disk: errno
                ENOSPC); the file is cut back to the records it held before.
        """
        lines = "".join(dumps_record(record) + "\n" for record in records).encode("utf-8")
        self.path.mkdir(parents=True, exist_ok=True)
        with signals_deferred():  # an interrupt lands after the batch, never inside a line
            self._drop_torn_tail()
            # Unbuffered: nothing is left in a buffer to be flushed (and fail again) on close.
            with self.samples_path.open("ab", buffering=0) as f:
                before = f.seek(0, os.SEEK_END)
                try:
                    view = memoryview(lines)
                    while view:
                        view = view[f.write(view):]
                    os.fsync(f.fileno())
                except OSError as err:
                    _cut_back(f.fileno(), before)
                    raise OSError(err.errno, err.strerror, str(self.samples_path)) from err

    def _drop_torn_tail(self) -> None:
        """Cut a last line that has no newline (an interrupted write), reading only the file's tail."""
        if not self.samples_path.is_file():
            return
        with self.samples_path.open("r+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end == 0:
                return
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            # Walk back a block at a time to the last newline; everything after it is the torn line.
            pos = end
            while pos > 0:
                start = max(0, pos - 65536)
                f.seek(start)
                block = f.read(pos - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    f.truncate(start + cut + 1)
                    return
                pos = start
            f.truncate(0)


def _parse(raw: bytes, sweep: bool | None) -> tuple[dict | None, str | None]:
    """(record, None) or (None, why the line is not one). `sweep` None: either kind of record."""
    value, reason = loads_line(raw)
    if reason is not None:
        return None, reason
    if sweep is None:  # no spec: a line with a key is held to the sweep schema
        sweep = isinstance(value, dict) and "key" in value
    reason = record_problem(value, sweep=sweep)
    return (value, None) if reason is None else (None, reason)


def _cut_back(fd: int, size: int) -> None:
    """Drop what a failed append left after `size` bytes (a partial batch), so the file ends
    with the last whole record; truncating needs no free space."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the next append cuts a torn tail anyway


def _what(record: dict, identity: str) -> str:
    if "key" in record:
        return f"key {identity!r}"
    return f"problem {record['problem_id']!r}, variant {variant_key(record_variant(record))}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _listing(lines: list[SkippedLine]) -> str:
    shown = "; ".join(f"line {s.line}: {s.reason}" for s in lines[:SHOWN_SKIPS])
    rest = len(lines) - SHOWN_SKIPS
    return shown + (f"; and {rest} more" if rest > 0 else "")
