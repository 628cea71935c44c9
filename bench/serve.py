"""`redumix serve` under concurrent clients: throughput and time to first token, side by side in one run.

Run on demand (`python bench/serve.py`; needs the serve extra and the openai client). The server
runs as `redumix serve` in a child process; this process plays the clients, each a thread with its
own `openai` client that streams its answers. For each method (greedy, soft thinking, ReDuMix) the
same requests (seeded arithmetic questions, one chat each, `--max-tokens` new tokens at most) are
sent sequentially, one after another, then by 4, 16 and 32 concurrent clients, each client sending
its next request when its answer is in. Printed per level: requests and completion tokens per
second, their ratio to the sequential run, the median and 90th-percentile time to first token (an
answer streams in one piece once decoded, so that is its latency), whether every answer equals the
sequential run's, and the share of the CPUs other processes (not the server, not the clients) took
meanwhile. With `transformers serve` installed, the same greedy requests are sent to it too, as the
peer.

Both servers run torch on `--threads` threads (1 by default): on a shared pair of cores, torch's
OpenMP threads spin against the clients and the other tenants, and a 32-token answer took 70 s
on two threads against 4.5 s on one.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


METHODS = {
    "greedy": {"decoder": "greedy"},
    "soft": {"decoder": "soft", "decoder_config": {"max_topk": 5}},
    "redumix": {"decoder": "redumix", "decoder_config": {"lam": 0.5, "reflection_max_new_tokens": 32}},
}


@dataclass
class Level:
    """One batch of requests sent by `clients` clients at once."""

    clients: int
    wall_s: float
    tokens: int
    ttft: list[float]
    answers: list[str]
    other_load: float

    @property
    def requests_per_s(self) -> float:
        return len(self.answers) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def questions(n: int, seed: int = 0) -> list[list[dict]]:
    """`n` distinct one-message chats, drawn with `seed`."""
    rng = random.Random(seed)
    asked: list[list[dict]] = []
    seen = set()
    while len(asked) < n:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        text = f"What is {a} {op} {b}? Think step by step, then give the answer."
        if text not in seen:
            seen.add(text)
            asked.append([{"role": "user", "content": text}])
    return asked


def start(command: list[str], ready: re.Pattern, threads: int, timeout: float = 600) -> tuple[subprocess.Popen, str]:
    """Start a server on `threads` torch threads; (its process, its base URL read from its output by `ready`)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{command[0]} ended before it served:\n{''.join(lines[-20:])}")
        lines.append(line)
        found = ready.search(line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError(f"{command[0]} did not start in {timeout:g} s:\n{''.join(lines[-20:])}")


class Tenants:
    """Context manager; `.share` is the busy share of all cores taken by processes other than this
    one and the server (`pid`), from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)  # busy, all (idle and iowait apart)

    def _ours(self) -> int:
        t = os.times()
        with open(f"/proc/{self.pid}/stat") as f:
            server = f.read().rsplit(")", 1)[1].split()
        return int((t.user + t.system) * os.sysconf("SC_CLK_TCK")) + int(server[11]) + int(server[12])

    def __enter__(self) -> Tenants:
        (self._busy, self._all), self._own = self._machine(), self._ours()
        return self

    def __exit__(self, *exc) -> None:
        busy, total = self._machine()
        self.share = max(0.0, (busy - self._busy - (self._ours() - self._own)) / max(1, total - self._all))


def send_all(url: str, server_pid: int, model: str, chats: list[list[dict]], clients: int, max_tokens: int,
             extra: dict | None) -> Level:
    """Every chat sent by `clients` clients, each streaming one answer at a time."""
    import openai

    answers: list[str | None] = [None] * len(chats)
    ttft: list[float] = [0.0] * len(chats)
    tokens = [0] * len(chats)
    cursor = iter(range(len(chats)))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def client_loop() -> None:
        api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=1800)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            try:
                sent = time.perf_counter()
                parts, first = [], None
                stream = api.chat.completions.create(model=model, messages=chats[i], max_tokens=max_tokens,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True},
                                                     **({"extra_body": extra} if extra else {}))
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        first = first if first is not None else time.perf_counter() - sent
                        parts.append(chunk.choices[0].delta.content)
                    if chunk.usage is not None:
                        tokens[i] = chunk.usage.completion_tokens
                answers[i], ttft[i] = "".join(parts), first if first is not None else time.perf_counter() - sent
            except BaseException as err:  # noqa: BLE001 (reported after the level)
                failures.append(err)
                return

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    with Tenants(server_pid) as load:
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} request(s) failed at {clients} clients: {failures[0]!r}")
    return Level(clients, wall, sum(tokens), ttft, [a or "" for a in answers], load.share)


def report(name: str, levels: list[Level]) -> None:
    base = levels[0]
    for level in levels:
        who = "seq" if level is base else str(level.clients)
        same = "yes" if level.answers == base.answers else \
            f"{sum(a == b for a, b in zip(level.answers, base.answers, strict=True))}/{len(base.answers)}"
        ttft = sorted(level.ttft)
        print(f"{name:<10} {who:>7} {level.requests_per_s:>7.2f} {level.requests_per_s / base.requests_per_s:>6.2f}x"
              f" {level.tokens_per_s:>8.1f} {level.tokens_per_s / base.tokens_per_s:>6.2f}x"
              f" {statistics.median(ttft):>8.2f} {ttft[int(0.9 * (len(ttft) - 1))]:>8.2f} {same:>6}"
              f" {level.other_load:>6.0%}", flush=True)


def run_method(name: str, url: str, pid: int, model: str, chats, levels: list[int], max_tokens: int, extra) -> None:
    send_all(url, pid, model, chats[:2], 2, max_tokens, extra)  # warm-up
    done = [send_all(url, pid, model, chats, 1, max_tokens, extra)]
    done += [send_all(url, pid, model, chats, k, max_tokens, extra) for k in levels if k > 1]
    report(name, done)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def transformers_serve(model_folder: str) -> list[str] | None:
    """The `transformers serve` command for `model_folder`, or None where it is not installed."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if exe is None:
        return None
    return [exe, "serve", model_folder, "--host", "127.0.0.1", "--port", str(free_port()), "--device", "cpu",
            "--dtype", "float32", "--log-level", "info"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--requests", type=int, default=32, help="requests per level and method")
    parser.add_argument("--levels", default="1,4,16,32", help="concurrent clients (1: the sequential run)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-size", type=int, default=32, help="the server's rows per engine call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server (default 1)")
    parser.add_argument("--no-peer", action="store_true", help="leave transformers serve out")
    args = parser.parse_args()

    from harness.engine.models import load_model

    levels = [int(k) for k in args.levels.split(",")]
    chats = questions(args.requests)
    loaded = load_model(args.model, dtype="float32")  # also converts a GGUF once, for the peer to read
    folder = str(loaded.model.name_or_path)
    del loaded
    print(f"model {args.model}, {args.requests} requests per level, up to {args.max_tokens} new tokens each, "
          f"server --batch-size {args.batch_size}, {args.threads} torch thread(s), {os.cpu_count()} CPUs")
    print(f"{'method':<10} {'clients':>7} {'req/s':>7} {'vs seq':>7} {'tok/s':>8} {'vs seq':>7} {'ttft p50':>8}"
          f" {'ttft p90':>8} {'same':>6} {'other':>6}")
    proc, url = start([sys.executable, "-m", "harness.cli", "serve", "--model", args.model, "--port", "0",
                       "--dtype", "float32", "--batch-size", str(args.batch_size), "--max-queue", "256",
                       "--served-model-name", "bench"], re.compile(r"(http://\S+/v1)"), args.threads)
    try:
        for name in args.methods.split(","):
            run_method(name, url, proc.pid, "bench", chats, levels, args.max_tokens, METHODS[name])
    finally:
        proc.terminate()
        proc.wait(60)
    peer = None if args.no_peer else transformers_serve(folder)
    if peer is None:
        print("transformers serve: " + ("left out (--no-peer)" if args.no_peer else "not installed"))
        return
    port = peer[peer.index("--port") + 1]
    proc, _ = start(peer, re.compile(r"(Uvicorn running|Application startup complete)"), args.threads)
    try:
        run_method("tf serve", f"http://127.0.0.1:{port}/v1", proc.pid, folder, chats, levels, args.max_tokens, None)
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
