"""lm-eval's own `local-chat-completions` model pointed at `redumix serve` runs our `rg_*` tasks,
and scores each problem as `redumix lm-eval` (our lm-eval model) does with the same method.

lm-eval's API models need `tenacity` (the dev extra); its chat model sends each request's
messages as they are, so `tokenizer_backend=None` (no tokenizer on the client side) and
`apply_chat_template=True` (the server renders the chat with the model's template, as our model
does). `num_concurrent` clients send at once, so the server answers them together.

One difference is lm-eval's, not the server's: an answer that ended on EOS inside an open
`<answer>` tag reaches the task's scorer as plain text (as any API model's or `hf`'s answers do),
which it takes as cut at the stop string and closes; our model's responses say how they ended.
Such answers are checked against that grading; every other one must be graded alike, and where
there are none, the accuracies are equal.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("fastapi", reason='redumix serve needs pip install ".[serve]"')
pytest.importorskip("uvicorn", reason='redumix serve needs pip install ".[serve]"')
pytest.importorskip("tenacity", reason="lm-eval's API models need tenacity (the dev extra)")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from harness.engine.models import embedded_model_path  # noqa: E402
from harness.lmeval import tasks as lm_eval_tasks  # noqa: E402
from tests.helpers.lm_eval import evaluate  # noqa: E402
from tests.helpers.serve import running  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
METRICS = ("acc,none", "score,none", "format_ok,none")


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    folder = lm_eval_tasks.write_task_dir(tmp_path_factory.mktemp("rg-tasks"))
    return TaskManager(include_path=str(folder), include_defaults=False, metadata={"rg_n": 8})


def _through_the_server(model, decoder: str, config: dict, task: str, task_manager, max_new: int, limit: int):
    with running(model, decoder=decoder, decoder_config={k: str(v) for k, v in config.items()},
                 max_new_tokens=max_new) as (service, url):
        results = lm_eval.simple_evaluate(
            model="local-chat-completions",
            model_args={"model": "tiny", "base_url": f"{url}/chat/completions", "tokenizer_backend": None,
                        "num_concurrent": 4, "max_retries": 1, "timeout": 600},
            tasks=[task], task_manager=task_manager, apply_chat_template=True, limit=limit,
            gen_kwargs={"max_gen_toks": max_new}, log_samples=True, bootstrap_iters=0)
        assert service.batcher.answered == limit and service.batcher.failed == 0
        return results


def _agree(served: dict, ours: dict, task: str, limit: int) -> tuple[float, int]:
    """Assert both runs answered every problem alike and graded it alike; (the served accuracy,
    how many answers ended on EOS inside an open tag)."""
    by_doc = {s["doc"]["problem_id"]: s for s in ours["samples"][task]}
    assert len(served["samples"][task]) == len(by_doc) == limit
    open_tags = 0
    for sample in served["samples"][task]:
        mine = by_doc[sample["doc"]["problem_id"]]
        text = mine["resps"][0][0]
        assert sample["resps"][0][0] == text != ""  # the same text, cut at the same stop
        grades = (sample["acc"], sample["score"], sample["format_ok"])
        if text.ended_on_stop or "<answer>" not in text:
            assert grades == (mine["acc"], mine["score"], mine["format_ok"])
        else:  # graded as lm-eval grades any model's plain text: as if cut at "</answer>"
            open_tags += 1
            verdict = lm_eval_tasks.verify_doc(sample["doc"], str(text))
            assert grades == (float(verdict.correct), verdict.score, float(verdict.format_ok))
    if not open_tags:
        for metric in METRICS:
            assert served["results"][task][metric] == ours["results"][task][metric], metric
    return served["results"][task]["acc,none"], open_tags


@pytest.mark.parametrize("decoder, config", [("greedy", {}), ("soft", {"max_topk": 5})])
def test_local_chat_completions_scores_as_redumix_lm_eval(tiny_model_dir, task_manager, decoder, config):
    task, max_new, limit = "rg_basic_arithmetic_easy", 12, 6
    served = _through_the_server(tiny_model_dir, decoder, config, task, task_manager, max_new, limit)
    ours = evaluate({"model": str(tiny_model_dir), "decoder": decoder, "dtype": "float32", **config}, [task],
                    task_manager, apply_chat_template=True, gen_kwargs={"max_gen_toks": max_new}, limit=limit)
    assert _agree(served, ours, task, limit)[1] == 0  # the tiny model never writes the tag


@pytest.mark.integration
def test_local_chat_completions_on_the_embedded_model_gets_redumix_lm_evals_accuracy(task_manager):
    try:
        embedded_model_path("smollm2-135m")
    except ValueError as err:
        pytest.skip(str(err))
    task, max_new, limit = "rg_basic_arithmetic_easy", 48, 8
    served = _through_the_server("smollm2-135m", "greedy", {}, task, task_manager, max_new, limit)
    ours = evaluate({"model": "smollm2-135m", "dtype": "float32"}, [task], task_manager, apply_chat_template=True,
                    gen_kwargs={"max_gen_toks": max_new}, limit=limit)
    accuracy, _ = _agree(served, ours, task, limit)
    assert accuracy > 0  # the model solves some: the equal grades are not all 0
