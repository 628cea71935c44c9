"""The store's own mechanics: a torn last line is cut before the next append, reading only the tail."""

from __future__ import annotations

import pytest

from harness.runs.store import RunDir


@pytest.mark.parametrize("content, kept", [
    (b"", b""),
    (b"a\n", b"a\n"),
    (b"a\nbc", b"a\n"),
    (b"abc", b""),  # the only line is torn
    (b"x\n" + b"y" * 200_000, b"x\n"),  # a torn line longer than one block read
    (b"\n\n\nz", b"\n\n\n"),
])
def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path, content, kept):
    store = RunDir(tmp_path)
    store.samples_path.write_bytes(content)
    store.append([{"n": 1}])
    assert store.samples_path.read_bytes() == kept + b'{"n": 1}\n'
