"""`redumix serve` inside a test: a server on a free loopback port in this process, and the
official `openai` client pointed at it."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from harness.serve.server import ServeOptions, bind, build_service, uvicorn_server


@contextmanager
def running(model_dir, **settings):
    """A server of the model in `model_dir` (served as "tiny") on a free loopback port; yields
    (its service, its base URL); stopped at the end."""
    options = ServeOptions(model=str(model_dir), dtype="float32", served_model_name="tiny", port=0, **settings)
    service = build_service(options)
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(service, options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield service, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(30)
        service.batcher.close()
        sock.close()


def client(url: str, key: str = "unused"):
    import openai

    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
