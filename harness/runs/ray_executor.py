"""The Ray executor: a sweep's work units on the actors of a Ray cluster (or a local Ray instance).

`RayExecutor.map_units(items)` yields `(unit, records)` as each unit finishes, like
`LocalExecutor`, and writes nothing: the sweep driver stays the single writer of the folder.
Items that share lambda-independent work (the same model, environment and seed: a greedy unit
and the ReDuMix units of one problem set) form a group that runs, in order, on one actor, which
keeps its models loaded and its method cache across units, so stages 1-3 and greedy first
attempts are reused as they are locally.

Failures: an actor that dies mid-unit is restarted by Ray (`max_restarts`, so its models load
again) and the unit is sent again, at most `max_attempts` times; a unit that raises an ordinary
exception is not retried: it is reported in `failures` and the other units go on. A unit can
thus run twice, so the driver drops any record whose key it already holds.

This module imports Ray; `harness.runs.sweep` does not import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from harness.console import is_quiet
from harness.engine.prefix_cache import PrefixCache
from harness.runs.executor import UnitRunner, WorkItem
from harness.runs.ray_local import init_loopback_ray
from harness.runs.signals import sigterm_handler_kept
from harness.runs.sweep_config import SweepConfig
from harness.runs.work_units import Unit

INSTALL_HINT = 'pip install ".[ray]"'
# Test hooks, read by the actors: a marker file's path (the first unit to find it absent creates
# it and ends its process, once), and a unit label whose units raise inside the worker
# ("exit:LABEL": end the actor's process instead).
EXIT_ONCE_ENV = "REDUMIX_RAY_TEST_EXIT_ONCE"
FAIL_UNIT_ENV = "REDUMIX_RAY_TEST_FAIL_UNIT"
REPO_ROOT = Path(__file__).resolve().parents[2]
# A restarting actor (its process died; Ray is starting another and loading its models) refuses
# calls for a while: the unit is sent again every RESTART_POLL_S, for at most RESTART_WAIT_S.
RESTART_POLL_S = 0.5
RESTART_WAIT_S = 300.0


# transformers' log level and huggingface_hub's (and so transformers') progress bars, read at import.
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def worker_env_vars() -> dict[str, str]:
    """Environment of the actors' processes: a fixed hash seed (some reasoning-gym tasks iterate
    over sets of strings), for a local instance this checkout on the import path, and while the
    command runs quietly (no --verbose) the libraries' own switches for quiet output, so the
    actors' model loads do not draw progress bars either (a user's own settings pass through)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    quiet = {name: os.environ.get(name, value) for name, value in QUIET_ENV.items()} if is_quiet() else {}
    return {"PYTHONHASHSEED": "0", "PYTHONPATH": path, **quiet}


@contextlib.contextmanager
def ray_connection(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connected to Ray for the block: to the cluster at `address` ("auto", "HOST:PORT"), or to a
    local instance started here (all of this machine's CPUs, no dashboard, a temporary folder,
    every port on loopback: `harness.runs.ray_local`) and shut down at the end. Already connected:
    the connection is used as it is."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray writes a token to ~/.ray
    temp = None
    # SIGTERM stays an interrupt (one line, records kept), not ray.init's immediate exit.
    with sigterm_handler_kept():
        if address:
            ray.init(address=address, runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}}, logging_level="warning")
        else:
            temp = tempfile.mkdtemp(prefix="redumix-ray-")
            try:  # on loopback only: an unauthenticated instance must not be reachable from the network
                init_loopback_ray(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, _temp_dir=temp,
                                  runtime_env={"env_vars": worker_env_vars()}, logging_level="warning")
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
    try:
        yield
    finally:
        ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


class _Described:
    """A model's description as an actor sent it (what `on_model_loaded` reads)."""

    def __init__(self, description: dict) -> None:
        self._description = description

    def describe(self) -> dict:
        return self._description


class UnitWorker:
    """One actor: runs a work item per call, keeping its models and method caches for the next."""

    def __init__(self, config: SweepConfig, prefix_cache_mb: int, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self._described: dict[str, dict] = {}
        self.runner = UnitRunner(config, prefix_cache=PrefixCache.of_megabytes(prefix_cache_mb),
                                 on_model_loaded=self._loaded)

    def _loaded(self, name: str, model) -> None:
        self._described[name] = json.loads(json.dumps(model.describe()))

    def run(self, item: WorkItem) -> dict:
        """The item's records, the models first loaded since the last call (described), and the
        seconds spent loading and decoding."""
        _test_hooks(item.unit)
        before = dict(self.runner.timings)
        records = [r for batch in self.runner.run(item) for r in batch]
        described, self._described = self._described, {}
        return {"records": records, "described": described,
                "timings": {k: v - before.get(k, 0.0) for k, v in self.runner.timings.items()}}


def _test_hooks(unit: Unit) -> None:
    marker = os.environ.get(EXIT_ONCE_ENV)
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(1)
    failing = os.environ.get(FAIL_UNIT_ENV, "")
    if failing == f"exit:{unit.label}":  # the unit ends its actor's process, every time
        os._exit(1)
    if failing == unit.label:
        raise RuntimeError(f"unit {unit.label} failed on purpose ({FAIL_UNIT_ENV})")


def group_items(items: Sequence[WorkItem]) -> list[list[WorkItem]]:
    """Items by (model, env label, seed), in order: the units of a group share lambda-independent work."""
    groups: dict[tuple, list[WorkItem]] = {}
    for item in items:
        groups.setdefault((item.unit.model, item.unit.env.label, item.unit.seed), []).append(item)
    return list(groups.values())


@dataclass
class RayExecutor:
    """Runs work items on Ray actors.

    Args:
        config, prefix_cache, on_model_loaded, on_unit: as `LocalExecutor`'s (each actor keeps a
            prefix cache of `prefix_cache`'s budget).
        models: must be empty: loaded models cannot be sent to actors.
        address: the cluster ("auto", "HOST:PORT"); None: a local Ray instance, started and shut
            down by `map_units`, unless Ray is already initialised in this process.
        actors: how many actors (default: one per group of items, at most one per CPU Ray has).
        cpus_per_actor: CPUs (and torch threads) per actor (default: Ray's CPUs / actors, at least 1).
        gpus_per_actor: GPUs per actor (default: none on a CPU sweep; Ray's GPUs / actors otherwise).
        memory_per_actor: bytes of memory Ray reserves per actor (default: none).
        max_restarts: restarts of a dead actor (each reloads its models) before it is replaced.
        max_attempts: how often a unit whose actor died is sent at most.
        env_vars: extra environment variables of the actors' processes.
    """

    config: SweepConfig
    models: Mapping[str, object] | None = None
    prefix_cache: PrefixCache | None = None
    on_model_loaded: Callable[[str, object], None] | None = None
    on_unit: Callable[[int, int, Unit], None] | None = None
    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    memory_per_actor: int | None = None
    max_restarts: int = 2
    max_attempts: int = 3
    env_vars: Mapping[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: {"load_s": 0.0, "decode_s": 0.0})
    failures: list[dict] = field(default_factory=list)  # {"unit", "label", "error"} of units given up on

    def __post_init__(self) -> None:
        if self.models:
            raise ValueError("the Ray executor loads models in its actors; it takes no loaded models")
        for name in ("actors", "cpus_per_actor"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} (={value}) must be more than 0")
        if self.max_attempts < 1 or self.max_restarts < 0:
            raise ValueError("max_attempts must be 1 or more and max_restarts 0 or more")

    def map_units(self, items: Sequence[WorkItem]) -> Iterator[tuple[Unit, list[dict]]]:
        if not items:
            return
        with ray_connection(self.address):
            yield from self._map(items)

    def _actor_options(self, count: int) -> dict:
        resources = ray.cluster_resources()
        # An actor runs on one node: a default share is at most the largest node's.
        largest = {kind: max((n["Resources"].get(kind, 0) for n in ray.nodes() if n.get("Alive")), default=0)
                   for kind in ("CPU", "GPU")}
        cpus = self.cpus_per_actor or max(1, int(min(resources.get("CPU", 1) // count, largest["CPU"] or 1)))
        gpus = self.gpus_per_actor
        if gpus is None and self.config.device != "cpu" and resources.get("GPU"):
            gpus = min(resources["GPU"] / count, largest["GPU"])
        options = {"num_cpus": cpus, "max_restarts": self.max_restarts, "max_task_retries": 0,
                   "runtime_env": {"env_vars": {**worker_env_vars(), **self.env_vars}}}
        if gpus:
            options["num_gpus"] = gpus
        if self.memory_per_actor:
            options["memory"] = self.memory_per_actor
        return options

    def _map(self, items: Sequence[WorkItem]) -> Iterator[tuple[Unit, list[dict]]]:
        groups = deque(group_items(items))
        count = self.actors or max(1, min(len(groups), int(ray.cluster_resources().get("CPU", 1))))
        options = self._actor_options(count)
        worker = ray.remote(UnitWorker).options(**options)
        budget = self.prefix_cache.budget_bytes // 2**20 if self.prefix_cache is not None else 0

        def new_actor():
            return worker.remote(self.config, budget, int(max(1, options["num_cpus"])))

        actors = [new_actor() for _ in range(count)]
        deaths = [0] * count
        waits = [0] * count  # polls of a restarting actor since its last finished unit
        queues: list[deque[WorkItem]] = [deque() for _ in range(count)]
        in_flight: dict = {}  # ref -> (actor index, item, attempt)
        announced: set[str] = set()
        sent = 0

        def submit(slot: int, item: WorkItem, attempt: int) -> None:
            in_flight[actors[slot].run.remote(item)] = (slot, item, attempt)

        def next_unit(slot: int) -> None:
            nonlocal sent
            if not queues[slot] and groups:
                queues[slot].extend(groups.popleft())
            if queues[slot]:
                item = queues[slot].popleft()
                sent += 1
                if self.on_unit is not None:
                    self.on_unit(sent, len(items), item.unit)
                submit(slot, item, 1)

        def fail(item: WorkItem, error: str) -> None:
            self.failures.append({"unit": item.unit, "label": item.unit.label, "error": error})

        try:
            for slot in range(count):
                next_unit(slot)
            while in_flight:
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                slot, item, attempt = in_flight.pop(ref)
                try:
                    out = ray.get(ref)
                except RayTaskError as err:  # the unit raised: not retried
                    cause = getattr(err, "cause", None)
                    fail(item, repr(cause) if cause is not None else str(err).strip().splitlines()[-1])
                    next_unit(slot)
                    continue
                except ActorUnavailableError as err:  # restarting after a death: the same attempt, once it is back
                    waits[slot] += 1
                    if waits[slot] * RESTART_POLL_S > RESTART_WAIT_S:
                        fail(item, f"its actor stayed unavailable for {RESTART_WAIT_S:.0f} s: "
                                   f"{str(err).strip().splitlines()[0]}")
                        next_unit(slot)
                    else:
                        time.sleep(RESTART_POLL_S)
                        submit(slot, item, attempt)
                    continue
                except RayActorError as err:  # the actor died (Ray restarts it up to max_restarts times)
                    deaths[slot] += 1
                    if deaths[slot] > self.max_restarts:  # dead for good: a fresh actor in its place
                        ray.kill(actors[slot])
                        actors[slot], deaths[slot] = new_actor(), 0
                    if attempt < self.max_attempts:
                        submit(slot, item, attempt + 1)
                    else:
                        fail(item, f"its actor died {attempt} times: {str(err).strip().splitlines()[0]}")
                        next_unit(slot)
                    continue
                waits[slot] = 0
                for name, description in out["described"].items():
                    if name not in announced and self.on_model_loaded is not None:
                        self.on_model_loaded(name, _Described(description))
                    announced.add(name)
                for key, seconds in out["timings"].items():
                    self.timings[key] = self.timings.get(key, 0.0) + seconds
                next_unit(slot)  # before yielding, so the actor is busy while the driver writes
                yield item.unit, out["records"]
        finally:
            for actor in actors:
                ray.kill(actor)
