"""Runs and sweeps: specs, the runner, sweep configs, work units and executors, the results store and its safety."""
