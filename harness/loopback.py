"""Loopback addresses: what only this machine can reach (a local Ray instance, `redumix serve` without a key)."""

from __future__ import annotations

import ipaddress

LOOPBACK = "127.0.0.1"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback written as IPv6 (::ffff:127.0.0.1)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)
