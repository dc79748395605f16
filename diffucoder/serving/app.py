"""The ASGI app (FastAPI): OpenAI's endpoints, health, metrics and the live view, over one :class:`Engine`.

    app = create_app(engine, model_name="sft", defaults=ServerDefaults(), request_timeout=600)
    uvicorn.run(app)          # or `diffucoder serve --model PATH`

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(``stream: true`` answers server-sent events in OpenAI's chunk format, then ``data: [DONE]``), ``GET /health``,
``GET /metrics`` (Prometheus), ``GET /`` (the live view) and ``POST /live`` (its event stream of canvas states).

Errors are OpenAI's JSON (``{"error": {"message", "type", "param", "code"}}``) with the matching status: 400
bad input (malformed JSON included), 404 unknown model or route, 429 queue full, 504 request timeout, 503
shutting down, 500 anything unexpected (logged with its traceback on the server; the client sees one line).

A streamed request first waits for its batch to start (so a full queue, a timeout while queued or a bad
setting still gets its status code); after that, a failure arrives as an SSE ``data: {"error": ...}`` event.
A client that disconnects (streaming or not) cancels its job; a per-request timeout (``request_timeout``
seconds from arrival to the last token) does the same and answers 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from diffucoder.serving.engine import (
    CanvasState,
    ChoiceDone,
    Engine,
    EngineStoppedError,
    Job,
    JobFailed,
    JobStarted,
    QueueFullError,
    TextDelta,
    Ticket,
)
from diffucoder.serving.live_view import page
from diffucoder.serving.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DiffusionFields,
    LiveRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    new_id,
    now,
    usage,
    usage_chunk,
    validation_error,
)
from diffucoder.serving.settings import ServerDefaults, resolve

log = logging.getLogger("diffucoder.serve")

_ROUTES = {"/", "/live", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"}


class _Disconnected(Exception):
    pass


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _Stream:
    """A job's events on the event loop: the engine thread's sink puts them on an asyncio queue."""

    def __init__(self, engine: Engine, job: Job, loop: asyncio.AbstractEventLoop, deadline: float | None):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.deadline = deadline
        self.loop = loop

        def sink(event: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
                loop.call_soon_threadsafe(self.queue.put_nowait, event)

        try:
            self.ticket: Ticket = engine.submit(job, sink)
        except QueueFullError as e:
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full") from None
        except EngineStoppedError as e:
            raise APIError(503, str(e), type="server_error", code="shutting_down") from None
        except ValueError as e:
            raise APIError(400, str(e), param="n") from None

    async def next(self, disconnected: "asyncio.Future | None" = None) -> Any:
        """The next event; :class:`APIError` 504 past the deadline, :class:`_Disconnected` if the client left."""
        get = asyncio.ensure_future(self.queue.get())
        waits = {get} if disconnected is None else {get, disconnected}
        timeout = None if self.deadline is None else max(self.deadline - time.monotonic(), 0)
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            event = get.result()
            if isinstance(event, JobFailed):
                raise APIError(event.status, event.message, type=event.type)
            return event
        get.cancel()
        if disconnected is not None and disconnected in done:
            raise _Disconnected
        raise APIError(504, "the request timed out (--request-timeout) before it finished", type="timeout",
                       code="timeout")


class _CountRequests:
    """Pure ASGI middleware counting answers by endpoint and status (BaseHTTPMiddleware would get in the way of
    disconnect detection and streaming)."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope.get("path", "")
            endpoint = ("/v1/models/{id}" if path.startswith("/v1/models/") else
                        path if path in _ROUTES else "other")
            self.metrics.requests.labels(endpoint, str(status[0])).inc()


async def _wait_disconnect(request: Any) -> None:
    """Returns when the client has gone (the ASGI receive channel says http.disconnect)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def create_app(engine: Engine, *, model_name: str, defaults: ServerDefaults | None = None,
               request_timeout: float | None = 600.0, created: int | None = None,
               on_ready: Callable[[], None] | None = None, on_stopped: Callable[[], None] | None = None,
               shutdown_timeout: float = 10.0) -> Any:
    """The FastAPI app serving ``engine``'s model as ``model_name``. The engine is started when the app starts
    and shut down when it stops (``on_ready`` is called once it is ready, ``on_stopped`` once the engine has
    stopped)."""
    defaults = defaults or ServerDefaults()
    created = created or now()
    tok = engine.tokenizer
    metrics = engine.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        engine.start()
        if on_ready is not None:
            on_ready()
        yield
        engine.shutdown(shutdown_timeout)
        if on_stopped is not None:
            on_stopped()

    app = FastAPI(title="diffucoder", version="0.1", lifespan=lifespan,
                  description="OpenAI-compatible server for masked-diffusion coders (Dream / DiffuCoder)")

    # -- errors -------------------------------------------------------------------------------------------
    def error_response(err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(APIError(exc.status_code, msg, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, f"internal server error ({type(exc).__name__})", type="server_error"))

    app.add_middleware(_CountRequests, metrics=metrics)

    # -- helpers ------------------------------------------------------------------------------------------
    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")

    def encode_prompts(prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str):
            prompts: list[Any] = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            prompts = [prompt]
        else:
            prompts = list(prompt)
        out = []
        for i, p in enumerate(prompts):
            ids = tok.encode(p) if isinstance(p, str) else [int(t) for t in p]
            if not ids:
                raise APIError(400, f"prompt{f'[{i}]' if len(prompts) > 1 else ''} is empty: give at least one "
                                    f"token", param="prompt")
            bad = [t for t in ids if not 0 <= t < tok.vocab_size]
            if bad:
                raise APIError(400, f"prompt holds token id {bad[0]} outside the vocabulary (0..{tok.vocab_size - 1})",
                               param="prompt")
            out.append(ids)
        return out

    def make_job(req: DiffusionFields, prompts: list[list[int]], canvas_events: bool = False) -> Job:
        canvas, sampling, max_tokens = resolve(req, defaults, [len(p) for p in prompts], engine.context_length)
        if len(prompts) * req.n > engine.max_batch:
            raise APIError(400, f"n: {len(prompts)} prompt(s) x n {req.n} = {len(prompts) * req.n} choices exceed "
                                f"the server's --max-batch of {engine.max_batch}", param="n")
        return Job(prompts=prompts, n=req.n, max_tokens=max_tokens, canvas=canvas, sampling=sampling,
                   stop=tuple(req.stop_list()), canvas_events=canvas_events)

    def open_stream(job: Job) -> _Stream:
        deadline = None if request_timeout is None else time.monotonic() + request_timeout
        return _Stream(engine, job, asyncio.get_running_loop(), deadline)

    async def collect(request: Request, stream: _Stream, n_choices: int) -> list[dict[str, Any]]:
        """Wait for every choice of a non-streamed job (cancelled if the client disconnects or time runs out)."""
        disconnected = asyncio.ensure_future(_wait_disconnect(request))
        choices: dict[int, dict[str, Any]] = {}
        try:
            while len(choices) < n_choices:
                event = await stream.next(disconnected)
                if isinstance(event, ChoiceDone):
                    choices[event.choice] = {"index": event.choice, "text": event.text,
                                             "finish_reason": event.finish_reason,
                                             "tokens": event.completion_tokens}
        except _Disconnected:
            stream.ticket.cancel()
            raise APIError(499, "client closed the request") from None
        finally:
            disconnected.cancel()
            stream.ticket.cancel()
        return [choices[i] for i in range(n_choices)]

    async def started(request: Request, stream: _Stream) -> None:
        """Wait until the job's batch starts (errors before then still get their own status code)."""
        disconnected = asyncio.ensure_future(_wait_disconnect(request))
        try:
            while not isinstance(await stream.next(disconnected), JobStarted):
                pass
        except _Disconnected:
            stream.ticket.cancel()
            raise APIError(499, "client closed the request") from None
        except BaseException:
            stream.ticket.cancel()
            raise
        finally:
            disconnected.cancel()

    def sse_response(body: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def openai_stream(stream: _Stream, rid: str, n_choices: int, prompt_tokens: int, chat: bool,
                            include_usage: bool) -> AsyncIterator[str]:
        created_at = now()
        obj = "chat.completion.chunk" if chat else "text_completion"
        finished, tokens = 0, 0
        try:
            if chat:
                for i in range(n_choices):
                    yield _sse(chat_chunk(rid, model_name, created_at, i, {"role": "assistant", "content": ""},
                                          None))
            while finished < n_choices:
                event = await stream.next()
                if isinstance(event, TextDelta):
                    yield _sse(chat_chunk(rid, model_name, created_at, event.choice, {"content": event.text}, None)
                               if chat else completion_chunk(rid, model_name, created_at, event.choice,
                                                             event.text, None))
                elif isinstance(event, ChoiceDone):
                    finished += 1
                    tokens += event.completion_tokens
                    yield _sse(chat_chunk(rid, model_name, created_at, event.choice, {}, event.finish_reason)
                               if chat else completion_chunk(rid, model_name, created_at, event.choice, "",
                                                             event.finish_reason))
            if include_usage:
                yield _sse(usage_chunk(rid, model_name, created_at, obj, usage(prompt_tokens, tokens)))
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield _sse(e.body())
        finally:
            stream.ticket.cancel()  # no-op when done; stops the work when the client went away

    # -- endpoints ------------------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> Any:
        ok = engine.alive
        body = {"status": "ok" if ok else "unavailable", "model": model_name, "queue_depth": engine.queue_depth,
                "running_rows": engine.running_rows, "batch_rows": engine.batch_rows,
                "max_batch": engine.max_batch, "max_queue": engine.max_queue}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "diffucoder",
                "max_model_len": engine.context_length}

    @app.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        check_model(model_id)
        return model_card()

    async def answer(req: Any, request: Request, prompts: list[list[int]], chat: bool) -> Any:
        """Decode ``prompts`` for one request: an SSE stream, or the whole response once every row is final."""
        job = make_job(req, prompts)
        stream = open_stream(job)
        rid = new_id("chatcmpl" if chat else "cmpl")
        if req.stream:
            await started(request, stream)
            return sse_response(openai_stream(stream, rid, job.rows, job.prompt_tokens, chat, req.include_usage))
        choices = await collect(request, stream, job.rows)
        respond = chat_response if chat else completion_response
        return respond(rid, model_name, choices, usage(job.prompt_tokens, sum(c["tokens"] for c in choices)))

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        check_model(req.model)
        return await answer(req, request, encode_prompts(req.prompt), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        check_model(req.model)
        return await answer(req, request, [tok.encode(tok.apply_chat_template(req.chat_messages()))], chat=True)

    @app.get("/", response_class=HTMLResponse)
    async def live_page() -> Any:
        return HTMLResponse(page(model_name))

    @app.post("/live")
    async def live(req: LiveRequest, request: Request) -> Any:
        check_model(req.model)
        text = tok.apply_chat_template([{"role": "user", "content": req.prompt}]) if req.chat else req.prompt
        prompts = [tok.encode(text)]
        job = make_job(req, prompts, canvas_events=True)
        stream = open_stream(job)
        await started(request, stream)
        t0 = time.monotonic()

        async def events() -> AsyncIterator[str]:
            finished, passes = 0, 0
            try:
                while finished < job.rows:
                    event = await stream.next()
                    if isinstance(event, CanvasState):
                        passes = event.forward_passes
                        yield _sse({"choice": event.choice, "step": event.step, "tokens": event.tokens,
                                    "settled": event.settled, "forward_passes": event.forward_passes}, "canvas")
                    elif isinstance(event, TextDelta):
                        yield _sse({"choice": event.choice, "text": event.text}, "text")
                    elif isinstance(event, ChoiceDone):
                        finished += 1
                        yield _sse({"choice": event.choice, "text": event.text,
                                    "finish_reason": event.finish_reason,
                                    "completion_tokens": event.completion_tokens,
                                    "forward_passes": passes, "seconds": time.monotonic() - t0}, "done")
            except APIError as e:
                yield _sse(e.body()["error"], "error")
            finally:
                stream.ticket.cancel()

        return sse_response(events())

    return app
