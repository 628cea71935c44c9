"""DeRa, decoding-time realignment: a reference and an aligned model mixed every step.

`config` (settings and the pure mixing rule) and `method` (the registered method: both models
in one batched decoding, every lambda of a grid in shared batches).
"""

from decoders.dera.config import ROLES, DeRa
from decoders.dera.method import DeRaMethod

__all__ = ["ROLES", "DeRa", "DeRaMethod"]
