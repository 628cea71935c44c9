"""A matplotlib figure as the bytes of a PNG file."""

from __future__ import annotations

import io


def png_bytes(figure) -> bytes:
    """`figure` laid out tight, as PNG bytes (a `Figure` with an Agg canvas, no pyplot state)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
