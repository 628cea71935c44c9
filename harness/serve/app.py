"""The FastAPI application: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.

Bodies are read by us (`harness.serve.protocol`), not by FastAPI's models, so that every
refusal is OpenAI's error object with a message naming the field and the fix. With an API key,
every route wants `Authorization: Bearer KEY` (401 without it).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from harness.serve.batcher import Batcher
from harness.serve.protocol import (
    ApiError,
    Defaults,
    closing_events,
    opening_events,
    parse_chat,
    parse_completion,
    read_json,
    response,
    text_event,
)
from harness.serve.server import DEFAULT_MAX_BODY_BYTES


@dataclass
class Service:
    """What the routes answer with: the defaults, the worker, the key and the body bound."""

    defaults: Defaults
    batcher: Batcher
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    dropped: int = 0  # requests whose answer was never sent (the server stopped before it came)


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="redumix", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        hint = {404: "the routes are GET /v1/models, POST /v1/chat/completions and POST /v1/completions",
                405: "see the routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions"}
        message = f"{err.detail}" + (f"; {hint[err.status_code]}" if err.status_code in hint else "")
        return _error(ApiError(err.status_code, message))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(ApiError(400, str(err)))

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        try:
            _authorize(service, request)
        except ApiError as err:
            return _error(err)
        model = {"id": service.defaults.model_id, "object": "model", "created": 0, "owned_by": "redumix"}
        return JSONResponse({"object": "list", "data": [model]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _complete(service, request, parse_chat)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _complete(service, request, parse_completion)

    return app


async def _complete(service: Service, request: Request, parse):
    try:
        _authorize(service, request)
        ask = parse(read_json(await _body(request, service.max_body_bytes)), service.defaults)
        if ask.stream:
            return await _stream(service, ask)
        result = await asyncio.wrap_future(service.batcher.submit(ask))
    except ApiError as err:
        return _error(err)
    except asyncio.CancelledError:  # the drain after Ctrl-C or SIGTERM ran out of time
        return _dropped(service)
    return JSONResponse(response(ask, result))


async def _stream(service: Service, ask):
    """A streamed answer: each choice's text as it is written, then its end, usage and extension.

    The response starts once the first text or the whole answer is in, so that a request refused
    by the worker (a prompt over the context window, say) still gets its error status. A client
    that goes away cancels the request: its rows leave the batch at the next step.
    """
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    future = service.batcher.submit(ask, on_text=lambda i, text: loop.call_soon_threadsafe(pieces.put_nowait,
                                                                                            (i, text)))
    answer = asyncio.wrap_future(future)
    first = asyncio.ensure_future(pieces.get())
    try:
        await asyncio.wait([first, answer], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        future.cancel()
        first.cancel()
        raise
    if answer.done() and answer.exception() is not None:
        first.cancel()
        raise answer.exception()

    async def events():
        sent = [""] * (len(ask.prompts) * ask.n)
        try:
            for event in opening_events(ask, len(sent)):
                yield event
            waiting = first
            while True:
                await asyncio.wait([waiting, answer], return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():  # the answer is in: the pieces still queued, then its end
                    waiting.cancel()
                    while not pieces.empty():
                        i, text = pieces.get_nowait()
                        sent[i] += text
                        yield text_event(ask, i, text)
                    break
                i, text = waiting.result()
                sent[i] += text
                yield text_event(ask, i, text)
                waiting = asyncio.ensure_future(pieces.get())
            for event in closing_events(ask, answer.result(), sent):
                yield event
        finally:
            future.cancel()  # the client went away (or the answer is in: then nothing to cancel)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _dropped(service: Service) -> JSONResponse:
    service.dropped += 1
    # Answered rather than cut off, so that the client can tell why (the connection closes after it).
    return _error(ApiError(503, "the server stopped before answering this request: it was shutting down and "
                                "its wait for requests in flight (redumix serve --drain-timeout) ran out; send "
                                "the request again once the server is back", code="server_shutting_down"))


def _authorize(service: Service, request: Request) -> None:
    if service.api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), service.api_key.encode()):
        what = "no API key was sent" if not given else "the API key sent is not this server's"
        raise ApiError(401, f"{what}; send the key the server was started with (redumix serve --api-key) as "
                            "'Authorization: Bearer KEY' (the OpenAI client's api_key)", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            raise _too_large(len(raw), limit)
    return bytes(raw)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the body ({size} bytes or more) is over this server's limit of {limit} bytes (redumix "
                         "serve --max-body-bytes); send a shorter prompt", code="request_too_large")


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)
