"""ReDuMix, the reflective dual-context mixture (see ../shared/seeds for the method).

One folder: `config` (settings and the pure stage-4 mixing rule), `stages` (first attempt,
feedback, reflection: the engine calls), `compress` (summarising a long first attempt to fit
the context budget), `method` (the registered method: stages 1-3 once per problem, stage 4
for every lambda), `report` (its record fields, summary columns, figures).
"""

from decoders.redumix.config import ReDuMix
from decoders.redumix.method import ReDuMixMethod, stage_cache

__all__ = ["ReDuMix", "ReDuMixMethod", "stage_cache"]
