"""Request schemas and response shapes of the OpenAI-compatible API, and OpenAI-style errors.

Requests are pydantic models with ``extra="forbid"``: an unknown field is a 400 naming it (a typo such as
``block_len`` is refused, not silently ignored). The diffusion settings ride along as extra body fields (the
``openai`` client sends them with ``extra_body={...}``):

- ``steps``: decoding steps (a step-count schedule; unused with ``threshold``), default: one token a step;
- ``alg``: unmasking order, one of ``origin``, ``maskgit_plus``, ``topk_margin``, ``entropy``;
- ``alg_temp``: sample positions from ``softmax(confidence / alg_temp)`` instead of taking the most confident;
- ``block_length``: semi-autoregressive blocks (the canvas is ``max_tokens`` long; its last block may be shorter);
- ``threshold``: parallel decoding, reveal every position whose token probability exceeds it;
- ``use_cache``: ``null``, ``"prefix"`` or ``"dual"`` (Fast-dLLM's block-wise KV cache: ``prefix`` reuses the
  prompt's and finished blocks' keys/values, ``dual`` also the masked suffix's; refreshed at every block start).

A field left out takes the server's default (``diffucoder serve --help``); a field sent as ``null`` turns the
feature off (``"block_length": null`` decodes the canvas as one block). Values are checked here, before anything
is queued, so that a bad request never reaches a batch.

OpenAI features with no meaning for this server (``logprobs``, ``echo``, ``suffix``, ``logit_bias``, tools,
non-zero penalties) are refused with a 400 naming the argument, never silently dropped.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")  # as diffucoder.sampling.ALGORITHMS
CACHE_MODES = ("prefix", "dual")
MAX_STOP_SEQUENCES = 8


class APIError(Exception):
    """An error answered as OpenAI's JSON: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _finite(name: str, v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return v


class DiffusionFields(BaseModel):
    """Fields shared by both endpoints: OpenAI's sampling fields and the diffusion extras."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    # diffusion extras (extra_body)
    steps: int | None = Field(default=None, ge=1)
    alg: str | None = None
    alg_temp: float | None = Field(default=None, ge=0)
    block_length: int | None = Field(default=None, ge=1)
    threshold: float | None = Field(default=None, gt=0, le=1)
    use_cache: str | None = None

    @field_validator("temperature", "top_p", "alg_temp", "threshold")
    @classmethod
    def _check_finite(cls, v: float | None, info: Any) -> float | None:
        return _finite(info.field_name, v)

    @field_validator("alg")
    @classmethod
    def _check_alg(cls, v: str | None) -> str | None:
        if v is not None and v not in ALGORITHMS:
            raise ValueError(f"unknown alg {v!r}; choose one of {list(ALGORITHMS)}")
        return v

    @field_validator("use_cache", mode="before")
    @classmethod
    def _check_cache(cls, v: Any) -> Any:
        if v is False:
            return None
        if v is not None and v not in CACHE_MODES:
            raise ValueError(f"use_cache must be null, 'prefix' or 'dual', got {v!r}")
        return v

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return v

    @field_validator("stream_options")
    @classmethod
    def _check_stream_options(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            unknown = set(v) - {"include_usage"}
            if unknown:
                raise ValueError(f"unsupported stream_options {sorted(unknown)}; only include_usage")
            if not isinstance(v.get("include_usage", False), bool):
                raise ValueError("stream_options.include_usage must be a boolean")
        return v

    @model_validator(mode="after")
    def _check_unsupported(self) -> "DiffusionFields":
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0:
                raise ValueError(f"{name} is not supported by a diffusion decoder (only 0)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def given(self, name: str) -> bool:
        """Whether the client sent ``name`` (a field sent as null counts: it turns the feature off)."""
        return name in self.model_fields_set

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(DiffusionFields):
    """``POST /v1/completions``: ``prompt`` is a string, a list of strings, a list of token ids, or a list of
    token-id lists (one choice block of ``n`` per prompt, OpenAI's order: prompt-major)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _check_completion_unsupported(self) -> "CompletionRequest":
        if self.echo:
            raise ValueError("echo is not supported")
        if self.logprobs is not None:
            raise ValueError("logprobs is not supported")
        if self.suffix is not None:
            raise ValueError("suffix is not supported")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported (only best_of == n)")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be an empty list")
        return self


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(DiffusionFields):
    """``POST /v1/chat/completions``: ``messages`` rendered with the tokenizer's chat template (Qwen2's, as
    DiffuCoder-Instruct); ``developer`` turns are rendered as ``system``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _check_chat_unsupported(self) -> "ChatCompletionRequest":
        if self.logprobs or self.top_logprobs is not None:
            raise ValueError("logprobs is not supported")
        if self.tools or self.tool_choice not in (None, "none"):
            raise ValueError("tools are not supported")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise ValueError("response_format other than {'type': 'text'} is not supported")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens disagree; send one")
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]


class LiveRequest(DiffusionFields):
    """``POST /live``: the live-view page's request, a chat prompt whose canvas states are streamed."""

    model: str | None = None  # type: ignore[assignment]  # the served model when absent
    prompt: str = Field(min_length=1)
    chat: bool = True


def validation_error(exc: Any) -> APIError:
    """An :class:`APIError` (400) from a pydantic / FastAPI validation error: the first problem, its field."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return APIError(400, f"invalid request: {exc}")
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    kind = err.get("type", "")
    if kind == "json_invalid":
        ctx = err.get("ctx") or {}
        return APIError(400, f"malformed JSON body: {ctx.get('error', 'cannot parse')}", code="invalid_json")
    if kind in ("missing", "model_attributes_type", "dict_type") and not loc:
        return APIError(400, "the request body must be a JSON object (sent as Content-Type: application/json)",
                        code="invalid_body")
    param = loc[0] if loc else None
    if kind == "extra_forbidden":
        return APIError(400, f"unrecognized request argument: {'.'.join(loc)}", param=param)
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    where = ".".join(loc)
    if kind == "missing":
        return APIError(400, f"{where}: required field missing", param=param)
    got = err.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list)) else ""
    return APIError(400, f"{where}: {msg}{shown}" if where else f"{msg}{shown}", param=param)


# -- response shapes ------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_response(rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int]) -> dict:
    """``text_completion``; each choice ``{"index", "text", "finish_reason"}``."""
    return {"id": rid, "object": "text_completion", "created": now(), "model": model,
            "choices": [{"index": c["index"], "text": c["text"], "logprobs": None,
                         "finish_reason": c["finish_reason"]} for c in choices],
            "usage": use}


def chat_response(rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int]) -> dict:
    """``chat.completion``; each choice ``{"index", "text", "finish_reason"}``."""
    return {"id": rid, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
                         "logprobs": None, "finish_reason": c["finish_reason"]} for c in choices],
            "usage": use}


def completion_chunk(rid: str, model: str, created: int, index: int, text: str,
                     finish_reason: str | None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def chat_chunk(rid: str, model: str, created: int, index: int, delta: dict[str, Any],
               finish_reason: str | None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(rid: str, model: str, created: int, obj: str, use: dict[str, int]) -> dict:
    """The final chunk of ``stream_options.include_usage``: no choices, the request's usage."""
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": use}
