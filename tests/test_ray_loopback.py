"""A local Ray instance started by `redumix sweep --executor ray` (no --address) is reachable from
this machine only: while the sweep runs, every socket its processes listen on (driver, GCS server,
raylet, workers, agents) is bound to a loopback address, never to the machine's network address
or a wildcard. An unauthenticated Ray cluster that other machines can reach runs any code sent to it."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers.cli import ROOT
from tests.helpers.sweeps import sweep_data

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is the IPv4 loopback on a dual-stack socket
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _bound_sockets(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket and bound UDP socket of `root` and its
    descendants; processes that end meanwhile are passed over."""
    found = set()
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in processes:
        try:
            name = proc.name()
            connections = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for conn in connections:
            listening = conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr)  # 2: SOCK_DGRAM
            if listening and conn.laddr:
                found.add((name, conn.laddr.ip, conn.laddr.port))
    return found


def test_a_local_ray_sweep_listens_on_loopback_only(tiny_model_dir, tmp_path):
    data = sweep_data(tiny_model_dir, n=2, seeds=(0, 1), lambdas=(0, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] != "sample"]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(config), "--out", str(out),
                             "--no-report", "--executor", "ray", "--ray-actors", "1", "--ray-cpus-per-actor", "1"],
                            cwd=ROOT, env=dict(os.environ, PYTHONHASHSEED="0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, str, int]] = set()
    root = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= _bound_sockets(root)
            time.sleep(0.1)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the sockets were seen while the instance ran
    exposed = sorted(s for s in seen if not _is_loopback(s[1]))
    assert not exposed, f"bound beyond loopback: {exposed}"
