"""Harness: model loading, the batched decoding engine, runs, results and reports."""
