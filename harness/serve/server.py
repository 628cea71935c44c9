"""Start the server: check the settings, load the models, bind, serve until Ctrl-C or SIGTERM.

The address is loopback (127.0.0.1) unless `--host` says otherwise, and an address other
machines can reach is refused without an API key: the server runs any prompt it is sent. On
Ctrl-C or SIGTERM the socket closes, requests in flight are answered for up to
`drain_timeout` seconds (those left then are answered 503), and the command ends with one line
saying how many were answered.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.engine.models import DEFAULT_MODEL, EMBEDDED_MODELS, LoadedModel, context_window
from harness.loopback import LOOPBACK, is_loopback

if TYPE_CHECKING:
    from harness.serve.app import Service
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class ServeOptions:
    """`redumix serve`'s settings (see `harness.serve.command` for each one's meaning)."""

    model: str = DEFAULT_MODEL
    decoder: str = "greedy"
    decoder_config: Mapping[str, str] = field(default_factory=dict)
    host: str = LOOPBACK
    port: int = DEFAULT_PORT
    api_key: str | None = None
    dtype: str = "auto"
    device: str = "cpu"
    seed: int = 0
    max_new_tokens: int = 256
    batch_size: int = 16
    max_queue: int = 64
    max_n: int = 16
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_timeout: float = 30.0
    served_model_name: str | None = None
    verbose: bool = False

    def check(self) -> None:
        """Refuse what cannot work, before anything loads.

        Raises:
            ValueError: an address other machines can reach without an API key, or a bound out of range.
        """
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"--host {self.host} is reachable from other machines, and without --api-key anyone who "
                             "reaches it can run the model; add --api-key KEY (clients send it as a Bearer token), or "
                             f"serve on {LOOPBACK} (the default)")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("--api-key is empty; give a key, or leave the flag out on a loopback address")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port (={self.port}) must be between 0 and 65535 (0: any free port)")
        for flag, value in (("--max-new-tokens", self.max_new_tokens), ("--batch-size", self.batch_size),
                            ("--max-queue", self.max_queue), ("--max-n", self.max_n),
                            ("--max-body-bytes", self.max_body_bytes)):
            if value < 1:
                raise ValueError(f"{flag} (={value}) must be 1 or more")
        if self.drain_timeout < 0:
            raise ValueError(f"--drain-timeout (={self.drain_timeout:g}) must be 0 or more seconds")

    def model_id(self) -> str:
        """The name clients send as `model`: the served name, else the model's name without its folders."""
        if self.served_model_name:
            return self.served_model_name
        return self.model if self.model in EMBEDDED_MODELS else Path(self.model).name


def build_service(options: ServeOptions, loaded: Mapping[str, LoadedModel] | None = None) -> Service:
    """The method checked, the models it needs loaded, and the worker started.

    `loaded`: models already loaded, by name (never loaded again).

    Raises:
        ValueError: an unknown decoder or parameter, a bad value, a method that would answer more
            than once per request, or a model that cannot be loaded.
    """
    from decoders import get_decoder
    from harness.engine.model_pool import ModelPool
    from harness.methods.base import role_model_names
    from harness.methods.registry import method_of
    from harness.serve.app import Service
    from harness.serve.batcher import Batcher
    from harness.serve.protocol import Defaults

    options.check()
    decoder = get_decoder(options.decoder, **dict(options.decoder_config))
    method = method_of(decoder)
    if len(method.variants()) != 1:
        raise ValueError(f"--decoder {decoder.name} would answer each request {len(method.variants())} times "
                         f"({method.variants()}); give one value (e.g. --decoder-config lam=0.5)")
    method.check_settings(options.max_new_tokens)
    pool = ModelPool(options.dtype, options.device, dict(loaded or {}))
    names = role_model_names(method, options.model)
    by_role = pool.by_role(names)
    served = pool.loaded[options.model]
    window = context_window(served.model) or 2048
    defaults = Defaults(model_id=options.model_id(), model_name=options.model, loaded=frozenset(pool.loaded),
                        decoder=decoder, seed=options.seed, max_new_tokens=options.max_new_tokens,
                        max_n=options.max_n, context_window=window)
    batcher = Batcher({names[role]: m for role, m in by_role.items()}, options.model, seed=options.seed,
                      batch_size=options.batch_size, max_queue=options.max_queue,
                      default_max_tokens=options.max_new_tokens, context_window=window)
    batcher.start()
    return Service(defaults=defaults, batcher=batcher, api_key=options.api_key, max_body_bytes=options.max_body_bytes)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port).

    Raises:
        ValueError: the address cannot be bound (in use, not this machine's), saying what to change.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ValueError(f"--host {host} is not an address this machine can serve on ({err.strerror or err}); "
                         f"give an IP address such as {LOOPBACK}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port (0: any "
                         "free port) or --host") from err
    return sock


def uvicorn_server(service: Service, options: ServeOptions):
    """A uvicorn server for `service` (started by the caller on a bound socket)."""
    import uvicorn

    from harness.serve.app import create_app

    if not options.verbose:  # our own lines only; --verbose shows uvicorn's log
        logging.getLogger("uvicorn").setLevel(logging.CRITICAL)
    config = uvicorn.Config(create_app(service), log_config=uvicorn.config.LOGGING_CONFIG if options.verbose else None,
                            log_level="info" if options.verbose else "critical", access_log=options.verbose,
                            timeout_graceful_shutdown=options.drain_timeout, lifespan="off")
    return uvicorn.Server(config)


def serve(options: ServeOptions) -> int:
    """Run the server until Ctrl-C or SIGTERM; the exit code (0: every request in flight answered)."""
    options.check()
    service = build_service(options)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    server = uvicorn_server(service, options)
    print(f"serving {service.defaults.model_id} with {service.defaults.decoder.name} at http://{where}:{port}/v1 "
          f"(Ctrl-C stops it, answering requests in flight for up to {options.drain_timeout:g} s)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn raises the signal it shut down on again once it is done
    finally:
        sock.close()
        service.batcher.close()
    left = service.dropped
    answered = service.batcher.answered
    if left:
        print(f"redumix serve: stopped after waiting {options.drain_timeout:g} s (--drain-timeout): {left} request"
              f"{'' if left == 1 else 's'} in flight not answered, {answered} answered", file=sys.stderr)
    else:
        print(f"redumix serve: stopped; {answered} request{'' if answered == 1 else 's'} answered, none left in "
              "flight", file=sys.stderr)
    code = 130 if left else 0
    if not service.batcher.idle(0):
        # A batch still decodes on the worker thread, and ending the interpreter under it aborts the
        # process: end it here, the line above written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

