"""The batched multi-context decoding engine: model loading and cache, prompts, stream batches, KV caches, scoring."""
