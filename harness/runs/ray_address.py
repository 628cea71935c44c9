"""`--address HOST:PORT` checked before Ray is asked to join it.

Ray retries an address where nothing answers for minutes, printing a warning every few
seconds; one TCP connection attempt tells the user at once. "auto" (the cluster this machine
started with `ray start`) is left to Ray, which answers quickly when there is none.
"""

from __future__ import annotations

import socket

CONNECT_TIMEOUT_S = 5.0


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of "HOST:PORT", "[IPv6]:PORT" or "ray://HOST:PORT"; None for "auto" and other forms.

    Raises:
        ValueError: a port that is not a number from 1 to 65535.
    """
    text = address.removeprefix("ray://")
    if ":" not in text:
        return None
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address (={address!r}): the port must be a number from 1 to 65535, e.g. HOST:6379")
    return host, int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Nothing when something accepts connections at `address` (or it is "auto").

    Raises:
        ValueError: naming the address, why it cannot be reached, and what to do.
    """
    parts = split_address(address)
    if parts is None:
        return
    try:
        with socket.create_connection(parts, timeout=timeout):
            pass
    except OSError as err:
        why = err.strerror or str(err) or type(err).__name__
        raise ValueError(f"--address (={address!r}): nothing answers there ({why}); start the cluster first "
                         "(ray start --head on that machine) or leave out --address to run a local Ray instance "
                         "on this machine") from None
