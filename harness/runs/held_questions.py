"""Resuming only where the problems on disk are the problems the env gives now.

A record names its problem by id, and an id can come to name another question: a problem
file's row edited under the same id, another reasoning-gym version, another task config in a
folder without its spec, or a folder from before each seed drew problems of its own. Before
anything is decoded, every record a resume keeps is checked against its problem's question now,
so two sets of questions never mix under one id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def changed_question(held: Mapping[str, str], current: Iterable[tuple[str, str]]) -> tuple[str, str, str] | None:
    """(id, question on disk, question now) of the first held id whose question changed, else None."""
    for name, question in current:
        before = held.get(name)
        if before is not None and before != question:
            return name, before, question
    return None


def changed_question_note(changed: tuple[str, str, str]) -> str:
    """What the folder holds, for a refusal, from `changed_question`'s answer."""
    name, before, now = changed
    return (f"a record of {name} whose question is {_cut(before)!r}, but that problem is now {_cut(now)!r} "
            "(a problem file edited since, another reasoning-gym version or task config, or a folder written "
            "before each seed drew problems of its own)")


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
