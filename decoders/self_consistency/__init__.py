"""Self-consistency (Wang et al., 2022): N sampled answers per problem, majority vote.

`config` holds its settings, `method` draws the samples in one batched engine call and
votes (registering the method), `report` declares its record fields.
"""

from decoders.self_consistency.config import SelfConsistency
from decoders.self_consistency.method import SelfConsistencyMethod, majority_vote, sample_key, vote_counts

__all__ = ["SelfConsistency", "SelfConsistencyMethod", "majority_vote", "sample_key", "vote_counts"]
