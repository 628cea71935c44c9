"""ReDuMix as a conversation on `redumix serve`: a person gives the feedback.

The model is the tiny one with a planted pattern (`helpers/digit_model.py`: it answers with the
one digit its conversation holds, "?" when none), so a redo that follows the person's feedback
can be read off its text. The person is played with the official `openai` client."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason='redumix serve needs pip install ".[serve]"')
pytest.importorskip("uvicorn", reason='redumix serve needs pip install ".[serve]"')
openai = pytest.importorskip("openai", reason="the tests talk to the server with the openai client (the dev extra)")

from decoders import get_decoder  # noqa: E402
from decoders.redumix import stages as redumix_stages  # noqa: E402
from envs import Problem  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.methods.request_env import HUMAN, NO_VERIFIER, HumanFeedback, RequestEnv  # noqa: E402
from tests.helpers.digit_model import UNKNOWN, train_digit_model  # noqa: E402
from tests.helpers.serve import client, running  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = "What is two plus three?"
# Short prompts keep x2 well inside the tiny model's window.
REDUMIX = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": 4}


@pytest.fixture(scope="module")
def digit_model_dir(tmp_path_factory):
    return train_digit_model(tmp_path_factory.mktemp("digit-model"))


@pytest.fixture(scope="module")
def server(digit_model_dir, one_thread):
    with running(digit_model_dir, max_new_tokens=4, decoder="redumix",
                 decoder_config={k: str(v) for k, v in REDUMIX.items()}) as (service, url):
        yield service, url


def _redumix(url: str, messages: list[dict], lam: float, **kwargs):
    return client(url).chat.completions.create(model="tiny", messages=messages, max_tokens=4,
                                               extra_body={"decoder_config": {"lam": lam}}, **kwargs)


def _ext(resp) -> dict:
    return resp.model_extra["redumix"]["choices"][0]


def test_a_person_gives_the_feedback_and_the_redo_follows_it(server):
    service, url = server
    # First request: the task alone runs stage 1, no feedback (none on a server), then stages 3-4.
    first = _redumix(url, [{"role": "user", "content": TASK}], lam=0.0)
    attempt = first.choices[0].message.content
    ext = _ext(first)
    assert attempt == UNKNOWN and ext["stage1_completion"] == UNKNOWN  # the task holds no digit
    assert ext["feedback"] == "" and ext["feedback_policy"] == NO_VERIFIER
    calls = service.batcher.calls
    for digit in "57":
        feedback = f"No, it is {digit}."
        chat = [{"role": "user", "content": TASK}, {"role": "assistant", "content": attempt},
                {"role": "user", "content": feedback}]
        redo = _redumix(url, chat, lam=0.0)
        ext = _ext(redo)
        assert redo.choices[0].message.content == digit, ext  # the redo follows the feedback
        assert ext["reflection"] == digit  # stage 3 reflected on the person's words
        assert ext["feedback"] == feedback and ext["feedback_policy"] == HUMAN
        assert ext["stage1_completion"] == attempt and ext["stage1_s"] == 0  # no stage 1: the chat's attempt
        assert ext["lambda"] == 0.0
        # lam comes per request: all weight on the original context x ignores the feedback.
        assert _redumix(url, chat, lam=1.0).choices[0].message.content == UNKNOWN
    assert service.batcher.calls == calls + 4


def test_a_conversation_streams_as_it_answers(server):
    _, url = server
    chat = [{"role": "user", "content": TASK}, {"role": "assistant", "content": UNKNOWN},
            {"role": "user", "content": "It is 3."}]
    chunks = list(_redumix(url, chat, lam=0.0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "3"
    assert chunks[-1].model_extra["redumix"]["choices"][0]["feedback"] == "It is 3."


def test_other_methods_answer_the_whole_chat(server):
    _, url = server
    chat = [{"role": "user", "content": TASK}, {"role": "assistant", "content": UNKNOWN},
            {"role": "user", "content": "It is 8."}]
    greedy = client(url).chat.completions.create(model="tiny", messages=chat, max_tokens=4,
                                                 extra_body={"decoder": "greedy"})
    assert greedy.choices[0].message.content == "8"  # the rendered chat, decoded as it is


@pytest.mark.parametrize("roles", [["system", "user"], ["user", "assistant"], ["user", "user", "user"],
                                   ["user", "assistant", "user", "assistant", "user"]])
def test_chats_redumix_cannot_take_are_refused_naming_the_two_it_takes(server, roles):
    _, url = server
    chat = [{"role": role, "content": "It is 4."} for role in roles]
    with pytest.raises(openai.BadRequestError) as caught:
        _redumix(url, chat, lam=0.5)
    error = caught.value.body
    assert error["param"] == "messages" and f"{len(roles)} messages" in error["message"]
    assert "one user message" in error["message"] and "[user: the task, assistant: a first attempt" in \
        error["message"]


def test_a_given_first_attempt_and_feedback_skip_stages_1_and_2(digit_model_dir):
    loaded = load_model(str(digit_model_dir), dtype="float32")
    decoder = get_decoder("redumix", lam="0", feedback="none", **{k: str(v) for k, v in REDUMIX.items()})
    problems = [Problem(env="x", problem_id=f"p{i}", index=i, seed=0, question=TASK, gold="", metadata={})
                for i in range(2)]
    given = {"p1": HumanFeedback(first_attempt=UNKNOWN, feedback="Try 6.")}
    env = RequestEnv(None, lambda p: TASK, name="serve", earlier=lambda p: given.get(p.problem_id))
    cache = redumix_stages.Stage13Cache()
    results = redumix_stages.solve_batch(env, loaded, decoder, problems, max_new_tokens=4, stop=[], seed=0,
                                         cache=cache, given=given)
    assert cache.stage1_calls == 1  # p0 alone made a first attempt
    alone, human = (r.stage for r in results)
    assert not alone.human and alone.feedback == "" and alone.stage1_completion == UNKNOWN
    assert human.human and human.feedback == "Try 6." and human.reflection == "6"
    assert [r.row.text for r in results] == [UNKNOWN, "6"]
