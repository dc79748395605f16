"""Server-side decoding defaults and their merge with a request's fields into engine settings.

Every check that depends on the model (context length) or on several fields together (``steps`` and blocks,
``threshold`` and ``alg``) happens here, before a job is queued, as a 400 naming the
argument: a bad request never reaches a batch it would share with others.

``max_tokens`` and ``block_length``: the canvas is exactly ``max_tokens`` long and its last block may be shorter
than ``block_length`` (``diffusion_generate`` allows it); a ``block_length`` above ``max_tokens`` means one block.
With a step-count schedule (``threshold: null``) ``steps`` must be a multiple of the number of blocks; left out,
it is ``max_tokens`` rounded up to one (at least one token a step). ``finish_reason`` is "length" when the canvas
ends before an end-of-text token or a stop sequence.

``top_k`` / ``top_p`` left out take the server's defaults, which by default are the checkpoint's own as the
reference resolves them (:func:`diffucoder.sampling.inherited_sampling_defaults`: top-k 50 for a config that sets
none); ``temperature`` left out is the server's ``--temperature`` (0, greedy, unless set: OpenAI and the
reference default to 1.0, a deliberate difference for a code server).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from diffucoder.serving.engine import CanvasSettings, SamplingSettings
from diffucoder.serving.protocol import ALGORITHMS, CACHE_MODES, APIError, DiffusionFields



@dataclass
class ServerDefaults:
    """What a request gets for a field it leaves out (``diffucoder serve --help`` sets each)."""

    max_tokens: int = 256
    temperature: float = 0.0
    """Greedy by default (OpenAI's default is 1.0; a code model is usually run greedy or near it)."""
    top_p: float | None = None
    top_k: int | None = None
    steps: int | None = None
    """None: one step per canvas token (the reference's schedule); unused with ``threshold``."""
    alg: str = "entropy"
    alg_temp: float | None = None
    block_length: int | None = 32
    threshold: float | None = 0.9
    use_cache: str | None = "prefix"

    def validate(self) -> None:
        """Raise ValueError naming the option (checked once, when the server starts)."""
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {self.top_k}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.alg not in ALGORITHMS:
            raise ValueError(f"--alg must be one of {list(ALGORITHMS)}, got {self.alg!r}")
        if self.alg_temp is not None and self.alg_temp < 0:
            raise ValueError(f"--alg-temp must be >= 0, got {self.alg_temp}")
        if self.block_length is not None and self.block_length < 1:
            raise ValueError(f"--block-length must be >= 1, got {self.block_length}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"--threshold must be in (0, 1], got {self.threshold}")
        if self.threshold is not None and self.alg == "origin":
            raise ValueError("--threshold needs a confidence order: --alg maskgit_plus, topk_margin or entropy")
        if self.use_cache is not None:
            if self.use_cache not in CACHE_MODES:
                raise ValueError(f"--use-cache must be none, prefix or dual, got {self.use_cache!r}")


def resolve(req: DiffusionFields, defaults: ServerDefaults, prompt_lengths: list[int],
            context_length: int) -> tuple[CanvasSettings, SamplingSettings, int]:
    """(canvas settings, sampling settings, max_tokens) for a request, or an :class:`APIError` (400)."""

    def pick(name: str, default: object) -> object:
        return getattr(req, name) if req.given(name) else default

    max_tokens = req.max_tokens if req.max_tokens is not None else defaults.max_tokens
    block = pick("block_length", defaults.block_length)
    threshold = pick("threshold", defaults.threshold)
    use_cache = pick("use_cache", defaults.use_cache)
    alg = req.alg if req.alg is not None else defaults.alg
    alg_temp = pick("alg_temp", defaults.alg_temp)
    steps = pick("steps", defaults.steps)
    canvas = max_tokens
    longest = max(prompt_lengths)
    if longest + canvas > context_length:
        raise APIError(400, f"max_tokens: the prompt ({longest} tokens) + max_tokens ({max_tokens}) exceeds the "
                            f"model's context of {context_length} tokens", param="max_tokens",
                       code="context_length_exceeded")
    n_blocks = 1 if block is None else -(-canvas // min(block, canvas))  # type: ignore[operator]
    if steps is None:
        steps = -(-canvas // n_blocks) * n_blocks
    if threshold is None and steps % n_blocks:  # type: ignore[operator]
        raise APIError(400, f"steps: {steps} is not a multiple of the number of blocks ({n_blocks} = "
                            f"ceil({canvas} canvas tokens / block_length {block}))", param="steps")
    if threshold is not None and alg == "origin":
        raise APIError(400, "threshold: parallel decoding needs a confidence order; use alg maskgit_plus, "
                            "topk_margin or entropy (or send threshold: null)", param="threshold")
    # one canonical form per decode, so that requests that decode alike share a batch
    if block is not None and block >= canvas:  # type: ignore[operator]
        block = None
    if threshold is not None:
        steps = canvas  # unused by threshold decoding
    temperature = req.temperature if req.temperature is not None else defaults.temperature
    top_p = pick("top_p", defaults.top_p)
    top_k = pick("top_k", defaults.top_k)
    return (CanvasSettings(canvas_tokens=canvas, steps=int(steps), alg=alg, alg_temp=alg_temp,  # type: ignore[arg-type]
                           block_length=block, threshold=threshold, use_cache=use_cache),  # type: ignore[arg-type]
            SamplingSettings(temperature=float(temperature), top_p=top_p, top_k=top_k,  # type: ignore[arg-type]
                             seed=req.seed),
            max_tokens)
