"""inspect_ai runs a tiny eval against `redumix serve` through its OpenAI-compatible provider
(`openai-api/<service>/<model>`, the service's URL and key from `<SERVICE>_BASE_URL` and
`<SERVICE>_API_KEY`). inspect_ai is no dependency of ours (it brings some 37 packages, 167 MB);
the test skips where it is not installed."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason='redumix serve needs pip install ".[serve]"')
pytest.importorskip("uvicorn", reason='redumix serve needs pip install ".[serve]"')
pytest.importorskip("inspect_ai", reason="inspect_ai is not installed (pip install inspect_ai)")

from inspect_ai import Task, eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.scorer import exact  # noqa: E402
from inspect_ai.solver import generate  # noqa: E402

from tests.helpers.serve import client, running  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTIONS = ["What is 2 + 3?", "What is 4 + 4?", "Count to 3."]


def test_an_inspect_eval_gets_the_servers_answers(tiny_model_dir, tmp_path, monkeypatch):
    with running(tiny_model_dir, max_new_tokens=8, api_key="k3y") as (service, url):
        own = [client(url, "k3y").chat.completions.create(model="tiny", messages=[{"role": "user", "content": q}],
                                                          max_tokens=8).choices[0].message.content
               for q in QUESTIONS]
        monkeypatch.setenv("REDUMIX_BASE_URL", url)
        monkeypatch.setenv("REDUMIX_API_KEY", "k3y")
        # Targets: the server's own answers, so that exact() scores 1 only where inspect got them.
        task = Task(dataset=[Sample(input=q, target=a) for q, a in zip(QUESTIONS, own, strict=True)],
                    solver=generate(), scorer=exact())
        [log] = eval(task, model="openai-api/redumix/tiny", max_tokens=8, temperature=0.0,
                     log_dir=str(tmp_path), display="none")
        answered = service.batcher.answered
    assert log.status == "success", log.error
    assert [s.output.completion for s in log.samples] == own
    assert [score.value for sample in log.samples for score in sample.scores.values()] == ["C"] * len(QUESTIONS)
    assert answered == 2 * len(QUESTIONS)
