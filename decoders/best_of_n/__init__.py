"""Best-of-N by self-certainty (Kang et al., 2025): the compute-matched baseline beside
self-consistency. `config` its settings, `selection` the pure choice rules, `certainty` the
per-step statistic, `method` the method (registered), `report` its record fields, summary
column and figure."""

from decoders.best_of_n.config import BestOfN
from decoders.best_of_n.method import BestOfNMethod

__all__ = ["BestOfN", "BestOfNMethod"]
