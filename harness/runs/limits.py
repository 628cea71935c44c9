"""Bounds on settings that no run can meet: refused with the setting's name before any work,
instead of failing deep inside (an integer too large for an index, memory for a list of a
trillion problems)."""

from __future__ import annotations

# Problems per environment and seed: each is built up front and its record kept in one samples.jsonl.
MAX_PROBLEMS = 1_000_000
# Torch CPU threads per CPU of the machine: more only adds threads the OS may refuse to start.
MAX_THREADS_PER_CPU = 4
