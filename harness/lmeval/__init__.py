"""lm-evaluation-harness: the `redumix` model, our tasks, and the `redumix lm-eval` route."""
