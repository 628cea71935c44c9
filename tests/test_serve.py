"""`redumix serve`: the OpenAI-compatible API on the tiny model, talked to with the official
`openai` client: chat, completions, streaming, methods chosen per request, every refusal, the
queue (429), batching that changes no answer, the address and key policy, and the drain on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='redumix serve needs pip install ".[serve]"')
pytest.importorskip("uvicorn", reason='redumix serve needs pip install ".[serve]"')
openai = pytest.importorskip("openai", reason="the tests talk to the server with the openai client (the dev extra)")

from envs import Problem  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.engine.prompts import encode, render_chat  # noqa: E402
from harness.methods import Generation, get_method  # noqa: E402
from harness.methods.request_env import RequestEnv  # noqa: E402
from harness.serve.batcher import Batcher  # noqa: E402
from harness.serve.server import ServeOptions  # noqa: E402
from tests.helpers.serve import client, running  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
HI = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir, one_thread):
    with running(tiny_model_dir, max_new_tokens=24) as (service, url):
        yield service, url


def _ext(resp) -> dict:
    return resp.model_extra["redumix"]


def test_models_lists_the_served_model(server):
    _, url = server
    assert [m.id for m in client(url).models.list().data] == ["tiny"]


def test_chat_answers_as_the_method_does_with_the_rendered_chat_as_given_ids(server):
    service, url = server
    resp = client(url).chat.completions.create(model="tiny", messages=HI, max_tokens=16)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    tok = service.batcher.tokenizer
    ids = encode(tok, render_chat(tok, HI))
    assert resp.usage.prompt_tokens == len(ids)
    assert resp.usage.completion_tokens == _ext(resp)["choices"][0]["new_tokens"]
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    # The same answer as the method gives for those ids, as an lm-eval request is answered.
    loaded = service.batcher.models[service.defaults.model_name]
    problem = Problem(env="x", problem_id="p", index=0, seed=0, question="", gold="", metadata={})
    [attempt] = get_method("greedy").solve(RequestEnv(None, lambda p: ""), {"policy": loaded}, [problem],
                                           Generation(max_new_tokens=16, stop=(), seed=0), given={"p": ids})
    assert choice.message.content == attempt.row.text
    assert choice.finish_reason == ("length" if attempt.row.finish_reason == "length" else "stop")


def test_completions_with_several_prompts_token_ids_and_n(server):
    _, url = server
    resp = client(url).completions.create(model="tiny", prompt=["2 + 3 =", "7 - 1 ="], max_tokens=8, n=2,
                                          temperature=0.9, seed=5)
    assert resp.object == "text_completion" and [c.index for c in resp.choices] == [0, 1, 2, 3]
    again = client(url).completions.create(model="tiny", prompt=["2 + 3 =", "7 - 1 ="], max_tokens=8, n=2,
                                           temperature=0.9, seed=5)
    assert [c.text for c in again.choices] == [c.text for c in resp.choices]  # the same request, the same answers
    assert _ext(resp)["decoder"] == "sample"  # temperature > 0 samples
    first = client(url).completions.create(model="tiny", prompt="2 + 3 =", max_tokens=8, temperature=0.9, seed=5)
    assert first.choices[0].text == resp.choices[0].text  # choice 0 of n=2 is the n=1 answer
    ids = client(url).completions.create(model="tiny", prompt=[[40, 41, 42]], max_tokens=4)
    assert ids.usage.prompt_tokens == 3


def test_streaming_gives_the_same_text_usage_and_extension(server):
    _, url = server
    plain = client(url).chat.completions.create(model="tiny", messages=HI, max_tokens=12)
    chunks = list(client(url).chat.completions.create(model="tiny", messages=HI, max_tokens=12, stream=True,
                                                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    ends = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert ends == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].model_extra["redumix"]["decoder"] == "greedy"
    streamed = list(client(url).completions.create(model="tiny", prompt="2 + 3 =", max_tokens=6, stream=True))
    whole = client(url).completions.create(model="tiny", prompt="2 + 3 =", max_tokens=6)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_a_stream_comes_token_by_token_as_the_answer_is_written(tiny_model_dir):
    long = {"model": "tiny", "prompt": "Hello world", "max_tokens": 200}
    with running(tiny_model_dir, max_new_tokens=200) as (service, url):
        whole = client(url).completions.create(**long)
        arrived, texts = [], []
        began = time.monotonic()
        for chunk in client(url).completions.create(**long, stream=True, stop=["zz"]):
            arrived.append(time.monotonic() - began)
            texts.append(chunk.choices[0].text if chunk.choices else "")
        assert len([t for t in texts if t]) > 20  # the text came in many pieces ...
        first = next(at for at, text in zip(arrived, texts, strict=True) if text)
        assert first < arrived[-1] / 3  # ... the first long before the answer's end
        assert "".join(texts) == whole.choices[0].text
        # n > 1 and a chat: each choice's pieces join to its answer.
        ask = {"model": "tiny", "messages": HI, "max_tokens": 40, "n": 2, "temperature": 1.0, "seed": 3}
        plain = client(url).chat.completions.create(**ask)
        by_choice = ["", ""]
        for chunk in client(url).chat.completions.create(**ask, stream=True):
            for choice in chunk.choices:
                by_choice[choice.index] += choice.delta.content or ""
        assert by_choice == [c.message.content for c in plain.choices]


def test_a_client_that_goes_away_mid_stream_frees_its_rows(tiny_model_dir):
    long = {"model": "tiny", "prompt": "Hello world", "max_tokens": 400}
    with running(tiny_model_dir, max_new_tokens=400) as (service, url):
        began = time.monotonic()
        client(url).completions.create(**long)
        alone_s = time.monotonic() - began
        steps = service.batcher.decoding.steps
        stream = client(url).completions.create(**long, stream=True)
        pieces = 0
        for chunk in stream:
            pieces += bool(chunk.choices and chunk.choices[0].text)
            if pieces == 5:
                break
        stream.close()  # the client goes away
        began = time.monotonic()
        _wait_for(lambda: service.batcher.busy == 0)
        assert time.monotonic() - began < alone_s / 2  # its rows left the batch, long before 400 tokens
        assert service.batcher.decoding.steps - steps < 300
        assert service.batcher.failed == 1


def test_extra_body_chooses_the_method_and_its_results_come_in_the_extension(server):
    _, url = server
    soft = client(url).chat.completions.create(model="tiny", messages=HI, max_tokens=12,
                                               extra_body={"decoder": "soft", "decoder_config": {"max_topk": 5}})
    ext = _ext(soft)
    assert ext["decoder"] == "soft" and ext["decoder_config"]["max_topk"] == 5
    assert "think_end" in ext["choices"][0]
    redumix = client(url).chat.completions.create(
        model="tiny", messages=HI, max_tokens=8,
        extra_body={"decoder": "redumix", "decoder_config": {"lam": 0.5, "reflection_max_new_tokens": 6}})
    choice = _ext(redumix)["choices"][0]
    assert {"reflection", "stage1_completion", "kl_mix_p1"} <= set(choice)
    assert choice["stage1_correct"] is None  # nothing graded it
    assert redumix.choices[0].message.content


@pytest.mark.parametrize("kwargs, param, words", [
    ({"extra_body": {"decoder": "sofft"}}, "decoder", "Did you mean: soft?"),
    ({"extra_body": {"decoder": "soft", "decoder_config": {"max_topk": -1}}}, "decoder_config", "max_topk"),
    ({"extra_body": {"decoder": "soft", "decoder_config": {"max_topc": 5}}}, "decoder_config", "max_topk"),
    ({"extra_body": {"decoder": "redumix", "decoder_config": {"lam": [0, 1]}}}, "decoder_config", "one value"),
    ({"extra_body": {"decoder": "dera", "decoder_config": {"aligned": "/etc"}}}, "decoder_config", "never by a"),
    ({"max_tokens": 100000}, "max_tokens", "context window"),
    ({"n": 17}, "n", "--max-n"),
    ({"temperature": -1}, "temperature", "0 or more"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "must be one of"),
    ({"messages": [{"role": "system", "content": "Be brief."}, *HI], "extra_body": {"decoder": "redumix"}},
     "messages", "one user message"),
])
def test_refusals_name_the_field_and_the_fix(server, kwargs, param, words):
    _, url = server
    args = {"model": "tiny", "messages": HI, "max_tokens": 8} | kwargs
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(**args)
    error = caught.value.body
    assert caught.value.status_code == 400 and error["param"] == param and words in error["message"], error


def test_unknown_model_is_404_and_never_loaded(server):
    _, url = server
    with pytest.raises(openai.NotFoundError) as caught:
        client(url).chat.completions.create(model="/some/other/model", messages=HI)
    assert "never by a request" in caught.value.body["message"]


def _post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_malformed_json_and_a_body_over_the_limit(server):
    service, url = server
    status, _, body = _post(url + "/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, _, body = _post(url + "/chat/completions", b"[1, 2]")
    assert status == 400 and "not an object" in body["error"]["message"]
    big = "x" * (service.max_body_bytes + 10)
    with pytest.raises(openai.APIStatusError) as caught:
        client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": big}])
    assert caught.value.status_code == 413 and "--max-body-bytes" in caught.value.body["message"]
    status, _, body = _post(url + "/nowhere", b"{}")
    assert status == 404 and "/v1/chat/completions" in body["error"]["message"]


def _held(monkeypatch, taken: list | None = None):
    """Hold each worker before it answers until the returned event is set; `taken` counts the requests taken."""
    release = threading.Event()
    answer = Batcher._answer

    def held(self, job):
        if taken is not None:
            taken.append(job)
        release.wait(60)
        answer(self, job)

    monkeypatch.setattr(Batcher, "_answer", held)
    return release


def _wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_queue_answers_429_with_retry_after(tiny_model_dir, monkeypatch):
    release = _held(monkeypatch)
    with (running(tiny_model_dir, max_queue=1, batch_size=1) as (service, url),
          concurrent.futures.ThreadPoolExecutor(2) as pool):
        ask = {"model": "tiny", "messages": HI, "max_tokens": 4}
        first = pool.submit(client(url).chat.completions.create, **ask)
        _wait_for(lambda: service.batcher._queue.qsize() == 0 and service.batcher.busy == 1)
        second = pool.submit(client(url).chat.completions.create, **ask)
        _wait_for(lambda: service.batcher._queue.qsize() == 1)
        with pytest.raises(openai.RateLimitError) as caught:
            client(url).chat.completions.create(**ask)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert "--max-queue" in caught.value.body["message"]
        release.set()
        assert first.result().choices[0].message.content == second.result().choices[0].message.content


def _requests() -> list[tuple[str, dict]]:
    """12 requests of three methods (greedy, sampling, soft), two of them identical."""
    asks = []
    for i in range(5):
        asks.append(("chat", {"messages": [{"role": "user", "content": f"What is {i} + {i + 2}?"}], "max_tokens": 10}))
    asks.append(asks[0])
    for i in range(4):
        asks.append(("completion", {"prompt": f"{i} * 3 =", "max_tokens": 10, "temperature": 0.8, "seed": i,
                                    "n": 1 + i % 2}))
    for i in range(2):
        asks.append(("chat", {"messages": [{"role": "user", "content": f"Count to {i + 3}."}], "max_tokens": 10,
                              "extra_body": {"decoder": "soft", "decoder_config": {"max_topk": 3}}}))
    return asks


def _send(url: str, kind: str, args: dict) -> tuple[str, list[str]]:
    if kind == "chat":
        resp = client(url).chat.completions.create(model="tiny", **args)
        return resp.id, [c.message.content for c in resp.choices]
    resp = client(url).completions.create(model="tiny", **args)
    return resp.id, [c.text for c in resp.choices]


def test_concurrent_clients_share_batches_and_get_the_answers_sent_alone_give(tiny_model_dir, monkeypatch):
    asks = _requests()
    with running(tiny_model_dir) as (service, url):
        alone = [_send(url, kind, args)[1] for kind, args in asks]
        assert service.batcher.decoding.joined == 0  # one at a time: every call had a batch of its own
    taken: list[int] = []
    release = _held(monkeypatch, taken)
    with running(tiny_model_dir) as (service, url), concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        futures = [pool.submit(_send, url, kind, args) for kind, args in asks]
        _wait_for(lambda: len(taken) == len(asks))  # every request is with a worker
        release.set()
        together = [f.result() for f in futures]
        assert service.batcher.answered == len(asks) and service.batcher.failed == 0
        # Greedy, sampling and soft rows decoded in shared batches: calls joined batches already decoding.
        assert service.batcher.decoding.joined > 0
    assert [answers for _, answers in together] == alone
    assert len({resp_id for resp_id, _ in together}) == len(asks)  # none lost, none answered twice


def test_a_request_joins_the_running_batch_and_leaves_before_a_longer_one(tiny_model_dir):
    long = {"model": "tiny", "prompt": "Hello world", "max_tokens": 400}
    short = {"model": "tiny", "prompt": "2 + 2 =", "max_tokens": 3}
    with running(tiny_model_dir, max_new_tokens=400) as (service, url), \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        alone_long = client(url).completions.create(**long)
        assert alone_long.choices[0].finish_reason == "length"  # this prompt runs the full 400 tokens
        alone_short = client(url).completions.create(**short).choices[0].text
        steps_alone = service.batcher.decoding.steps
        ended: dict[str, float] = {}

        def send(ask, name):
            resp = client(url).completions.create(**ask)
            ended[name] = time.monotonic()
            return resp.choices[0].text

        first = pool.submit(send, long, "long")
        _wait_for(lambda: service.batcher.decoding.steps > steps_alone + 20)  # the long one is decoding
        second = pool.submit(send, short, "short")
        assert second.result() == alone_short and first.result() == alone_long.choices[0].text
        assert service.batcher.decoding.joined == 1  # it joined at a step boundary ...
        assert ended["short"] < ended["long"]  # ... and left when done, not when the batch drained


def test_a_non_loopback_host_without_a_key_is_refused_before_loading(tiny_model_dir, capsys):
    code = main(["serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--host 0.0.0.0 is reachable from other machines" in err and "--api-key" in err
    ServeOptions(host="0.0.0.0", api_key="k").check()  # with a key it is allowed
    ServeOptions(host="::1").check()


def test_missing_serve_extra_prints_the_install_command(tiny_model_dir, monkeypatch, capsys):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else find(name, *a))
    code = main(["serve", "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and 'pip install ".[serve]"' in err


def test_with_a_key_requests_without_it_get_401(tiny_model_dir):
    with running(tiny_model_dir, api_key="s3cret") as (_, url):
        with pytest.raises(openai.AuthenticationError) as caught:
            client(url, "wrong").models.list()
        assert "not this server's" in caught.value.body["message"]
        status, headers, body = _post(url + "/chat/completions", json.dumps({"messages": HI}).encode())
        assert status == 401 and "no API key was sent" in body["error"]["message"]
        assert {k.lower(): v for k, v in headers.items()}["www-authenticate"] == "Bearer"
        resp = client(url, "s3cret").chat.completions.create(model="tiny", messages=HI, max_tokens=4)
        assert resp.choices[0].finish_reason in ("stop", "length")


def test_sigterm_drains_the_request_in_flight_then_exits_with_one_line(tiny_model_dir):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--model", str(tiny_model_dir), "--port",
                             "0", "--dtype", "float32", "--served-model-name", "tiny"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+/v1)", line).group(1)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(client(url).completions.create, model="tiny", prompt="1 2 3", max_tokens=400, n=8,
                                temperature=1.0)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert len(reply.result().choices) == 8  # answered, not cut off
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0
    assert err.strip().splitlines() == ["redumix serve: stopped; 1 request answered, none left in flight"]


def test_a_drain_that_runs_out_of_time_exits_130_with_one_line(tiny_model_dir):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--model", str(tiny_model_dir), "--port",
                             "0", "--dtype", "float32", "--served-model-name", "tiny", "--drain-timeout", "0.2",
                             "--batch-size", "1", "--max-n", "128"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://\S+/v1)", proc.stdout.readline()).group(1)
        assert client(url).completions.create(model="tiny", prompt="1", max_tokens=2).choices  # answered
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # 128 rows of up to 480 sampled tokens, one engine call each: about 20 s on an idle CPU, far longer
            # than the drain's 0.2 s even where the decoding thread keeps the server's event loop waiting.
            reply = pool.submit(client(url).completions.create, model="tiny", prompt="1 2 3", max_tokens=480, n=128,
                                temperature=1.0)
            time.sleep(1.5)
            assert not reply.done()
            proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            _, err = proc.communicate(timeout=60)
            stopped_s = time.monotonic() - began
            with pytest.raises(openai.InternalServerError) as caught:  # told why, not cut off
                reply.result()
        assert caught.value.status_code == 503 and "--drain-timeout" in caught.value.body["message"]
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["redumix serve: stopped after waiting 0.2 s (--drain-timeout): 1 request in "
                                        "flight not answered, 1 answered"]
    assert stopped_s < 10  # the drain's 0.2 s and the shutdown, not the rest of the batch
