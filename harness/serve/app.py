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
from harness.serve.protocol import ApiError, Defaults, parse_chat, parse_completion, read_json, response, stream_events
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
        result = await asyncio.wrap_future(service.batcher.submit(ask))
    except ApiError as err:
        return _error(err)
    except asyncio.CancelledError:  # the drain after Ctrl-C or SIGTERM ran out of time
        service.dropped += 1
        # Answered rather than cut off, so that the client can tell why (the connection closes after it).
        return _error(ApiError(503, "the server stopped before answering this request: it was shutting down and "
                                    "its wait for requests in flight (redumix serve --drain-timeout) ran out; send "
                                    "the request again once the server is back", code="server_shutting_down"))
    if ask.stream:
        return StreamingResponse(iter(stream_events(ask, result)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return JSONResponse(response(ask, result))


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
