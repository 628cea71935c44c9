"""A local Ray instance that only this machine can reach.

Ray's processes (GCS server, raylet, workers, agents, the driver's own server) bind to the node's
IP address, which Ray takes from the machine's network interface: a private instance would then
listen on every interface, and an unauthenticated Ray cluster runs any code it is sent. Ray's
single-machine mode (the one it uses on Windows and macOS) takes the loopback address as the node
IP instead, and with it every Ray server binds to loopback. The instance is checked once it is up:
one whose node registered under another address is shut down and refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray

from harness.loopback import LOOPBACK, is_loopback


def init_loopback_ray(**init_kwargs) -> None:
    """`ray.init(**init_kwargs)` for a new local instance whose node IP is 127.0.0.1, so that all of
    its ports are on loopback.

    Raises:
        ValueError: the instance came up under a network address (a Ray version that ignores the
            single-machine switch); it is shut down first.
    """
    with _single_machine_mode():
        ray.init(_node_ip_address=LOOPBACK, **init_kwargs)
    addresses = sorted({node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")})
    if not addresses or not all(is_loopback(a) for a in addresses):
        ray.shutdown()
        raise ValueError(f"the local Ray instance registered under {', '.join(addresses) or 'no address'} "
                           f"instead of {LOOPBACK} (Ray {ray.__version__}), so other machines could reach it; "
                           "it was stopped. Start a cluster yourself (ray start --head "
                           f"--node-ip-address={LOOPBACK}) and pass --address auto")


@contextlib.contextmanager
def _single_machine_mode() -> Iterator[None]:
    # Read by ray.init when it picks the node IP: False means the loopback address.
    from ray._private import ray_constants

    had = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had:
            ray_constants.ENABLE_RAY_CLUSTER = before
        else:
            del ray_constants.ENABLE_RAY_CLUSTER
