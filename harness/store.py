"""Run directories: the resolved spec and an append-only JSONL of records.

Records are appended and flushed as each batch finishes, so a crash loses at most
the batch in flight. A torn last line (a crash mid-write) is ignored on read and
cut off before the next append.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

SPEC_FILE = "spec.json"
SAMPLES_FILE = "samples.jsonl"


class RunDir:
    """One run's folder on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spec_path = self.path / SPEC_FILE
        self.samples_path = self.path / SAMPLES_FILE

    def read_spec(self) -> dict | None:
        if not self.spec_path.is_file():
            return None
        return json.loads(self.spec_path.read_text())

    def write_spec(self, spec: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.spec_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.spec_path)

    def read_records(self) -> list[dict]:
        """Every complete record; a torn last line is skipped."""
        if not self.samples_path.is_file():
            return []
        records = []
        for line in self.samples_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def append(self, records: Iterable[dict]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        with self.samples_path.open("a") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut a last line that has no newline (an interrupted write)."""
        if not self.samples_path.is_file():
            return
        data = self.samples_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.samples_path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
