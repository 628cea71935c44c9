"""The OpenAI request and response shapes: bodies read and checked into `Ask`s, answers written
back as chat completions, completions and their streamed chunks.

Every refusal is an `ApiError`: an HTTP status and OpenAI's error object, whose message names
the field and the fix. The method of a request is the server's, or the one its extra fields
name (`decoder`, `decoder_config`), built with the functions `redumix run` uses
(`get_decoder`, `method_of`), so names and values are checked, and misspellings answered, alike.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from decoders import get_decoder
from harness.methods.base import Method, role_model_names
from harness.methods.registry import method_of
from harness.methods.request_env import sampling_decoder

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}
ROLES = ("system", "developer", "user", "assistant")
MAX_STOPS = 16
# Fields that would change the answer and are not implemented: refused rather than ignored.
# (field, value that asks nothing of the server)
_UNSUPPORTED = {"tools": None, "functions": None, "tool_choice": "none", "function_call": "none", "logprobs": False,
                "top_logprobs": None, "logit_bias": None, "echo": False, "suffix": None, "presence_penalty": 0,
                "frequency_penalty": 0}


class ApiError(Exception):
    """A refused request: `status`, and OpenAI's {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Defaults:
    """What a request does not say: the server's model, method and bounds."""

    model_id: str  # the name clients send as `model` (never a path)
    model_name: str  # the model as `--model` named it (what methods' roles resolve to)
    loaded: frozenset[str]  # model names loaded at startup; a request can use no other
    decoder: Any  # the server's decoder config (built and checked at startup)
    seed: int
    max_new_tokens: int
    max_n: int
    context_window: int


@dataclass
class Ask:
    """One request, read and checked: what to decode and how to answer."""

    kind: str  # "chat" or "completion"
    prompts: list[Any]  # chat: [messages]; completion: texts or token id lists
    method: Method  # as it runs without an environment
    decoder: Any
    n: int
    max_tokens: int | None  # None: the server's default, cut to what fits the context window
    stop: tuple[str, ...]
    seed: int
    stream: bool = False
    include_usage: bool = False
    model_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = ""

    def group_key(self) -> tuple:
        """Requests with one key share engine calls: the same method, settings and lengths."""
        config = json.dumps(self.decoder.config(), sort_keys=True, default=str)
        return (self.decoder.name, config, self.stop, self.max_tokens)


def read_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as err:
        raise ApiError(400, f"the body is not UTF-8 text ({err.reason} at byte {err.start}); send a JSON object "
                            "encoded as UTF-8") from err
    except ValueError as err:
        raise ApiError(400, f"the body is not valid JSON ({err}); send a JSON object such as "
                            '{"model": ..., "messages": [...]}') from err
    if not isinstance(body, dict):
        raise ApiError(400, f"the body is a JSON {type(body).__name__}, not an object; send a JSON object such as "
                            '{"model": ..., "messages": [...]}')
    return body


def parse_chat(body: dict, defaults: Defaults) -> Ask:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects, e.g. "
                            '[{"role": "user", "content": "What is 2 + 3?"}]', param="messages")
    checked = [_message(m, i) for i, m in enumerate(messages)]
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or
                                        response_format.get("type", "text") != "text"):
        raise ApiError(400, f"response_format (={response_format!r}) is not supported: answers are plain text; "
                            "leave it out or give {\"type\": \"text\"}", param="response_format")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    return _ask("chat", body, [checked], defaults, max_tokens, name)


def parse_completion(body: dict, defaults: Defaults) -> Ask:
    prompt = body.get("prompt")
    if isinstance(prompt, str) or _is_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or _is_ids(p) for p in prompt):
        prompts = list(prompt)
    else:
        raise ApiError(400, "prompt must be a text, a list of texts, a list of token ids or a list of such lists, "
                            'e.g. "2 + 3 ="', param="prompt")
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise ApiError(400, f"best_of (={best_of!r}) is not supported; leave it out, or choose a method that draws "
                            'several answers per request: extra_body={"decoder": "best_of_n"}', param="best_of")
    return _ask("completion", body, prompts, defaults, body.get("max_tokens"), "max_tokens")


def _ask(kind: str, body: dict, prompts: list, defaults: Defaults, max_tokens, max_name: str) -> Ask:
    model = body.get("model")
    if model is not None and model != defaults.model_id:
        raise ApiError(404, f"model (={model!r}) is not served here; this server serves {defaults.model_id!r} "
                            "(GET /v1/models lists it); models are chosen when the server starts, never by a request",
                       param="model", code="model_not_found")
    for name, idle in _UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != idle and value != [] and value != {}:
            raise ApiError(400, f"{name} is not supported by this server; leave it out", param=name)
    n = _integer(body, "n", 1)
    if n < 1 or n > defaults.max_n:
        raise ApiError(400, f"n (={n}) must be between 1 and {defaults.max_n}, this server's bound (redumix serve "
                            "--max-n); ask for fewer choices, or send several requests", param="n")
    if max_tokens is not None:
        max_tokens = _integer(body, max_name, None)
        if max_tokens < 1 or max_tokens >= defaults.context_window:
            raise ApiError(400, f"{max_name} (={max_tokens}) must be at least 1 and leave room for the prompt in the "
                                f"model's context window of {defaults.context_window} tokens; lower {max_name}",
                           param=max_name, code="context_length_exceeded" if max_tokens >= 1 else None)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOPS:
        stops = tuple(stop)
    else:
        raise ApiError(400, f"stop must be a text or a list of at most {MAX_STOPS} texts", param="stop")
    seed = _integer(body, "seed", defaults.seed)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream (={stream!r}) must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, 'stream_options must be an object, e.g. {"include_usage": true}', param="stream_options")
    decoder = _decoder(body, defaults)
    method = method_of(decoder)
    _check_method(method, decoder, max_tokens or defaults.max_new_tokens, defaults)
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    return Ask(kind=kind, prompts=prompts, method=method.without_env(), decoder=decoder, n=n, max_tokens=max_tokens,
               stop=stops, seed=seed, stream=stream, include_usage=bool((options or {}).get("include_usage")),
               model_id=defaults.model_id, id=prefix + uuid.uuid4().hex)


def _decoder(body: dict, defaults: Defaults):
    """The request's decoder: the server's, or `decoder` with `decoder_config` (over the server's
    config when only `decoder_config` is given), then the OpenAI sampling fields."""
    name = body.get("decoder")
    config = body.get("decoder_config")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, f"decoder (={name!r}) must be a name, e.g. \"soft\" (redumix list decoders)",
                       param="decoder")
    if config is not None and not isinstance(config, dict):
        raise ApiError(400, f"decoder_config (={config!r}) must be an object of parameters, e.g. "
                            '{"max_topk": 5}', param="decoder_config")
    decoder = defaults.decoder
    if name is not None or config:
        texts = {key: _config_text(key, value) for key, value in (config or {}).items()}
        # Only decoder_config: the server's decoder with these parameters changed.
        base = {} if name is not None else {f.name: getattr(decoder, f.name) for f in dataclasses.fields(decoder)
                                            if f.init}
        try:
            decoder = get_decoder(name if name is not None else decoder.name, **(base | texts))
        except ValueError as err:
            unknown_name = str(err).startswith("Unknown decoder")
            raise ApiError(400, f"{err}" + ("" if unknown_name else " (in decoder_config)"),
                           param="decoder" if unknown_name else "decoder_config") from err
    return _with_sampling(body, decoder, config or {})


def _with_sampling(body: dict, decoder, config: dict):
    """temperature > 0 asks to sample (with top_p and top_k), as an lm-eval task asks it."""
    settings = {}
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(400, f"{key} (={value!r}) must be a number", param=key)
        if key in config and str(config[key]) != str(value):
            raise ApiError(400, f"{key} (={value!r}) and decoder_config.{key} (={config[key]!r}) disagree; give it "
                                "once", param=key)
        settings[key] = value
    temperature = settings.get("temperature")
    if temperature is None or temperature <= 0:
        if temperature is not None and temperature < 0:
            raise ApiError(400, f"temperature (={temperature!r}) must be 0 or more", param="temperature")
        return decoder
    try:
        return sampling_decoder(decoder, settings)
    except ValueError as err:
        raise ApiError(400, str(err), param=next(iter(k for k in settings if k in str(err)), "temperature")) from err


def _check_method(method: Method, decoder, max_tokens: int, defaults: Defaults) -> None:
    variants = method.variants()
    if len(variants) != 1:
        raise ApiError(400, f"decoder {decoder.name!r} would answer each request {len(variants)} times ({variants}); "
                            "a response holds one answer per choice, so give one value (e.g. \"lam\": 0.5) and send "
                            "one request per value", param="decoder_config")
    try:
        method.check_settings(max_tokens)
    except ValueError as err:
        raise ApiError(400, str(err), param="decoder_config") from err
    names = role_model_names(method, defaults.model_name)
    foreign = {role: name for role, name in names.items() if name not in defaults.loaded}
    if foreign:
        roles = ", ".join(f"{role}={name}" for role, name in foreign.items())
        raise ApiError(400, f"decoder {decoder.name!r} would run on a model this server has not loaded ({roles}); "
                            "models are chosen when the server starts (redumix serve --decoder "
                            f"{decoder.name} --decoder-config ...), never by a request", param="decoder_config")


def _message(message: Any, i: int) -> dict[str, str]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise ApiError(400, f"{where} must be an object with role and content", param=where)
    role = message.get("role")
    if role not in ROLES:
        raise ApiError(400, f"{where}.role (={role!r}) must be one of {', '.join(ROLES)}", param=f"{where}.role")
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}.content holds a part that is not text ({_short(part)}); this server "
                                    "reads text parts only", param=f"{where}.content")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise ApiError(400, f"{where}.content must be a text (or a list of text parts)", param=f"{where}.content")
    return {"role": role, "content": content}


def _integer(body: dict, key: str, default):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key} (={value!r}) must be an integer", param=key)
    return value


def _config_text(key: str, value: Any) -> str:
    """A JSON value as `--decoder-config key=value` writes it, so both are read by one parser."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in value):
        return ",".join(str(v) for v in value)
    raise ApiError(400, f"decoder_config.{key} (={_short(value)}) must be a number, text, true/false or a list of "
                        "numbers", param=f"decoder_config.{key}")


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# -- responses ----------------------------------------------------------------------


@dataclass
class Answer:
    """One choice: its text, why it ended, its tokens, and the method's own fields."""

    text: str
    finish_reason: str  # OpenAI's: "stop" or "length"
    completion_tokens: int
    fields: dict


@dataclass
class Result:
    """What the worker hands back for an `Ask`: choices in OpenAI's order (prompt by prompt, n each)."""

    answers: list[Answer]
    prompt_tokens: int


def finish_reason(engine_reason: str) -> str:
    """The engine's eos / stop / length as OpenAI names them."""
    return "length" if engine_reason == "length" else "stop"


def usage(result: Result) -> dict:
    completion = sum(a.completion_tokens for a in result.answers)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion,
            "total_tokens": result.prompt_tokens + completion}


def extension(ask: Ask, result: Result) -> dict:
    """The method-specific results, one object: the method, its config, the seed, per choice its fields."""
    return {"decoder": ask.decoder.name, "decoder_config": ask.method.config(), "seed": ask.seed,
            "choices": [a.fields for a in result.answers]}


def response(ask: Ask, result: Result) -> dict:
    if ask.kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish_reason,
                    "logprobs": None} for i, a in enumerate(result.answers)]
        kind = "chat.completion"
    else:
        choices = [{"index": i, "text": a.text, "finish_reason": a.finish_reason, "logprobs": None}
                   for i, a in enumerate(result.answers)]
        kind = "text_completion"
    return {"id": ask.id, "object": kind, "created": ask.created, "model": ask.model_id, "choices": choices,
            "usage": usage(result), "system_fingerprint": None, "redumix": extension(ask, result)}


def opening_events(ask: Ask, choices: int) -> list[str]:
    """A chat's first chunk of each choice (its role); none for a completion."""
    if ask.kind != "chat":
        return []
    return [_chunk(ask, [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                          "logprobs": None}]) for i in range(choices)]


def text_event(ask: Ask, index: int, text: str) -> str:
    """A chunk of choice `index`'s text."""
    if ask.kind == "chat":
        return _chunk(ask, [{"index": index, "delta": {"content": text}, "finish_reason": None, "logprobs": None}])
    return _chunk(ask, [{"index": index, "text": text, "finish_reason": None, "logprobs": None}])


def closing_events(ask: Ask, result: Result, sent: list[str] | None = None) -> list[str]:
    """The rest of each choice's text beyond what was `sent` already, each choice's end, the usage
    (when asked for) and the extension object on the last chunk, then [DONE]."""
    events = []
    for i, a in enumerate(result.answers):
        rest = a.text[len(sent[i]):] if sent is not None and a.text.startswith(sent[i]) else ""
        if rest:
            events.append(text_event(ask, i, rest))
    ends = [({"index": i, "delta": {}} if ask.kind == "chat" else {"index": i, "text": ""})
            | {"finish_reason": a.finish_reason, "logprobs": None} for i, a in enumerate(result.answers)]
    if ask.include_usage:
        events.extend(_chunk(ask, [end]) for end in ends)
        events.append(_chunk(ask, [], usage=usage(result), redumix=extension(ask, result)))
    else:
        events.extend(_chunk(ask, [end]) for end in ends[:-1])
        events.append(_chunk(ask, [ends[-1]], redumix=extension(ask, result)))
    events.append("data: [DONE]\n\n")
    return events


def _chunk(ask: Ask, choices: list, **extra) -> str:
    kind = "chat.completion.chunk" if ask.kind == "chat" else "text_completion"
    body = {"id": ask.id, "object": kind, "created": ask.created, "model": ask.model_id, "choices": choices}
    return f"data: {json.dumps(body | extra)}\n\n"
