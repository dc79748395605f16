"""The serving engine: a bounded queue of generation jobs, one scheduler thread that groups them into canvas
batches, and per-step streaming of the settled text.

    engine = Engine(model, tokenizer, max_batch=32, max_queue=256)
    engine.start()
    ticket = engine.submit(job, sink)       # sink(event) is called from the engine thread
    ...
    engine.shutdown()

**Batching.** A diffusion canvas is decoded by one ``diffusion_generate`` call from start to finish (all rows
start together; a row cannot join a running canvas), so batching is *dynamic*, not continuous: when the thread
is free it keeps waiting while requests keep arriving, until none has arrived for ``batch_wait`` seconds, at
most ``max_batch_wait`` seconds after the oldest waiting request arrived, or until ``max_batch`` rows wait (a
burst of clients is gathered even when their requests trickle in over tens of milliseconds), then takes the
oldest job and every later waiting job that can share its canvas, up to ``max_batch`` rows, and decodes them as one left-padded batch (``attention_mask`` hides the pads, so a
row decodes as it would alone). Jobs share a canvas when their :class:`CanvasSettings` are equal (canvas
length, steps, alg, blocks, threshold, cache: these shape the whole decode); sampling settings are per row
(``diffusion_generate`` takes one temperature / top-p / top-k and one generator per row), so greedy and sampled
requests share a batch. A request that draws random numbers gets its own ``torch.Generator`` (seeded with its
``seed``, else from the server's RNG) shared by its ``n`` rows, and rows are sampled group by group: its draws
come from its own generator alone, so a seeded request gives the same answer alone or in any batch. Greedy rows
(temperature 0 with a confidence order) need no generator.

**Streaming.** After every step the scheduler reads each row's settled prefix (the completion tokens before
the first [MASK]: revealed tokens never change) and feeds it to :class:`~diffucoder.serving.text.CompletionText`,
which emits the new final text. A row is final at end-of-text / pad / ``<|im_end|>``, at a stop sequence or at
``max_tokens``; once every row of the batch is final or its client is gone, the decode is aborted: the answers
are already fixed, so aborting (``step_callback`` returns True) changes no text and saves the remaining steps;
this extends ``diffusion_generate``'s ``early_stop`` (also on: a row that has written its end-of-text is left out of
the forward passes) to stop sequences, ``max_tokens`` and departed clients.

**Cancellation.** :meth:`Ticket.cancel` (a client that disconnected or timed out) removes a waiting job from
the queue; a running job's rows stop counting, and a batch whose rows are all cancelled is aborted.

Events delivered to a job's sink: :class:`JobStarted`, :class:`TextDelta`, :class:`CanvasState` (only for jobs
with ``canvas_events``), :class:`ChoiceDone` (one per choice), :class:`JobFailed`.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from diffucoder.sampling import DecodeStep, GenerationError, diffusion_generate
from diffucoder.serving.metrics import ServerMetrics
from diffucoder.serving.text import CompletionText

log = logging.getLogger("diffucoder.serve")


@dataclass(frozen=True)
class CanvasSettings:
    """Settings that shape the whole decode: jobs share a canvas batch only when these are equal."""

    canvas_tokens: int
    """Canvas length N (= the request's ``max_tokens``; the last block may be shorter than ``block_length``)."""
    steps: int
    """Decoding steps (a multiple of the number of blocks, split evenly between them); unused with ``threshold``."""
    alg: str
    alg_temp: float | None = None
    block_length: int | None = None
    threshold: float | None = None
    use_cache: str | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """Per-request token sampling: temperature, top-p, top-k and the seed of the request's generator."""

    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None


@dataclass
class Job:
    """One request: ``prompts`` (token ids) x ``n`` choices, in OpenAI's order (choice = prompt * n + j)."""

    prompts: list[list[int]]
    n: int
    max_tokens: int
    canvas: CanvasSettings
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stop: tuple[str, ...] = ()
    canvas_events: bool = False

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def is_random(canvas: CanvasSettings, sampling: SamplingSettings) -> bool:
    """Whether decoding draws random numbers: sampled tokens, random reveal order (``origin``) or ``alg_temp``."""
    return sampling.temperature > 0 or canvas.alg == "origin" or bool(canvas.alg_temp)


# -- events ------------------------------------------------------------------------------------------------------


@dataclass
class JobStarted:
    batch_rows: int


@dataclass
class TextDelta:
    choice: int
    text: str


@dataclass
class CanvasState:
    choice: int
    step: int
    tokens: list[str | None]
    """The completion canvas: each position's token text, None for [MASK]."""
    settled: int
    forward_passes: int


@dataclass
class ChoiceDone:
    choice: int
    text: str
    finish_reason: str
    completion_tokens: int


@dataclass
class JobFailed:
    status: int
    message: str
    type: str = "server_error"


Event = JobStarted | TextDelta | CanvasState | ChoiceDone | JobFailed
Sink = Callable[[Event], None]


class QueueFullError(RuntimeError):
    """The queue holds ``max_queue`` waiting jobs."""


class EngineStoppedError(RuntimeError):
    """The engine is shutting down."""


class Ticket:
    """A submitted job: its sink, its state, and :meth:`cancel`."""

    _ids = itertools.count()

    def __init__(self, engine: "Engine", job: Job, sink: Sink) -> None:
        self.id = next(self._ids)
        self.engine = engine
        self.job = job
        self.sink = sink
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.first_text: float | None = None
        self.cancelled = False
        self.done = False
        self.completion_tokens = 0
        self._open_choices = job.rows

    def cancel(self) -> None:
        """Stop this job's work (idempotent): dropped from the queue, or its rows no longer counted."""
        if not self.cancelled and not self.done:
            self.cancelled = True
            self.engine._cancelled(self)

    def emit(self, event: Event) -> None:
        if self.cancelled:
            return
        try:
            self.sink(event)
        except Exception:  # a broken sink must not take the batch down
            log.exception("event sink of job %d failed", self.id)


@dataclass
class _Row:
    ticket: Ticket
    choice: int
    prompt: list[int]
    text: CompletionText
    settled: int = 0


class Engine:
    """Owns the model, the queue and the scheduler thread (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 32, max_queue: int = 256,
                 batch_wait: float = 0.02, max_batch_wait: float = 0.2, seed: int | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if batch_wait < 0 or max_batch_wait < batch_wait:
            raise ValueError(f"need 0 <= batch_wait <= max_batch_wait, got {batch_wait} and {max_batch_wait}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait = batch_wait
        self.max_batch_wait = max_batch_wait
        self._last_arrival = 0.0
        self.device = next(model.parameters()).device
        self.mask_id = tokenizer.mask_token_id
        self.pad_id = tokenizer.pad_token_id
        self.stop_ids = tokenizer.stop_token_ids()
        self.vocab_limit = tokenizer.vocab_size
        self.context_length = int(model.config.max_position_embeddings)
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._queue: deque[Ticket] = deque()
        self._running: list[_Row] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.metrics = metrics or ServerMetrics(queue_depth=lambda: self.queue_depth,
                                                running_rows=lambda: self.running_rows)

    # -- public --------------------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running_rows(self) -> int:
        return sum(1 for r in self._running if not r.ticket.cancelled and not r.text.final)

    @property
    def batch_rows(self) -> int:
        """Rows of the decode in progress, cancelled ones included (0 when no decode runs)."""
        return len(self._running)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._thread = threading.Thread(target=self._loop, name="diffucoder-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job, sink: Sink) -> Ticket:
        """Queue ``job``; ``sink`` receives its events from the engine thread. Raises
        :class:`QueueFullError` when ``max_queue`` jobs wait, :class:`EngineStoppedError` when stopping."""
        if job.rows > self.max_batch:
            raise ValueError(f"the request needs {job.rows} canvas rows (prompts x n) but the server decodes at "
                             f"most {self.max_batch} at once (--max-batch)")
        ticket = Ticket(self, job, sink)
        with self._cond:
            if self._stopping or self._thread is None:
                raise EngineStoppedError("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"the queue is full ({self.max_queue} requests waiting); retry later")
            self._queue.append(ticket)
            self._last_arrival = ticket.submitted
            self._cond.notify_all()
        log.debug("queued job %d: %d rows, %d jobs waiting", ticket.id, job.rows, len(self._queue))
        return ticket

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking work, abort the running decode, fail every waiting job (503), join the thread."""
        with self._cond:
            self._stopping = True
            waiting = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for t in waiting:
            t.emit(JobFailed(503, "the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    # -- scheduling ------------------------------------------------------------------------------------------
    def _cancelled(self, ticket: Ticket) -> None:
        with self._cond:
            try:
                self._queue.remove(ticket)
            except ValueError:
                pass

    @staticmethod
    def _batch_key(ticket: Ticket) -> CanvasSettings:
        return ticket.job.canvas

    def _take_batch(self) -> list[Ticket]:
        """The oldest job and every later one that can share its canvas, up to ``max_batch`` rows."""
        head = self._queue[0]
        key = self._batch_key(head)
        batch, rows = [], 0
        for t in list(self._queue):
            if self._batch_key(t) == key and rows + t.job.rows <= self.max_batch:
                batch.append(t)
                rows += t.job.rows
                self._queue.remove(t)
            if rows == self.max_batch:
                break
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                cap = self._queue[0].submitted + self.max_batch_wait
                while (not self._stopping and self._queue
                       and sum(t.job.rows for t in self._queue) < self.max_batch):
                    remaining = min(self._last_arrival + self.batch_wait, cap) - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopping:
                    return
                if not self._queue:  # all cancelled while waiting
                    continue
                batch = self._take_batch()
            try:
                self._run(batch)
            except Exception as e:  # never let one batch kill the server
                log.exception("decode failed")
                for t in batch:
                    if not t.done:
                        t.done = True
                        t.emit(JobFailed(500, f"decoding failed: {type(e).__name__}"))
            finally:
                self._running = []

    # -- decoding ------------------------------------------------------------------------------------------
    def _run(self, batch: list[Ticket]) -> None:
        rows: list[_Row] = []
        generators: list[torch.Generator | None] = []
        now = time.monotonic()
        canvas = batch[0].job.canvas
        for t in batch:
            t.started = now
            gen = None
            if is_random(canvas, t.job.sampling):  # one generator per request, shared by its rows
                seed = t.job.sampling.seed if t.job.sampling.seed is not None else self._rng.randrange(2 ** 63)
                gen = torch.Generator(device=self.device).manual_seed(seed % 2 ** 64)
            for p, prompt in enumerate(t.job.prompts):
                for j in range(t.job.n):
                    text = CompletionText(self.tokenizer.decode, self.stop_ids, t.job.stop, t.job.max_tokens)
                    rows.append(_Row(t, p * t.job.n + j, prompt, text))
                    generators.append(gen)
        self._running = rows
        log.debug("decoding %d rows of %d jobs (%d still waiting)", len(rows), len(batch), len(self._queue))
        for t in batch:
            t.emit(JobStarted(len(rows)))
        width = max(len(r.prompt) for r in rows)
        inputs = torch.tensor([[self.pad_id] * (width - len(r.prompt)) + r.prompt for r in rows],
                              dtype=torch.long, device=self.device)  # (B, P), left-padded
        attention = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in rows],
                                 dtype=torch.long, device=self.device)  # (B, P)
        want_canvas = any(t.job.canvas_events for t in batch)
        passes = 0

        def on_step(state: DecodeStep) -> bool:
            nonlocal passes
            passes = state.forward_passes
            self._after_step(rows, state, want_canvas)
            return self._stopping or all(r.ticket.cancelled or r.text.final for r in rows)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "steps per block exceed tokens per block": harmless here
                x = diffusion_generate(
                    self.model, inputs, attention_mask=attention, max_new_tokens=canvas.canvas_tokens,
                    steps=canvas.steps, alg=canvas.alg, alg_temp=canvas.alg_temp,
                    temperature=[r.ticket.job.sampling.temperature for r in rows],
                    top_p=[r.ticket.job.sampling.top_p for r in rows],
                    top_k=[r.ticket.job.sampling.top_k for r in rows], generator=generators,
                    block_length=canvas.block_length, threshold=canvas.threshold, use_cache=canvas.use_cache,
                    early_stop=True, mask_token_id=self.mask_id, vocab_limit=self.vocab_limit,
                    stop_token_ids=self.stop_ids, step_callback=on_step)
        except GenerationError as e:  # settings are checked before queuing; this is a last line of defence
            for t in batch:
                t.done = True
                t.emit(JobFailed(400, str(e), "invalid_request_error"))
            return
        # rows still open after the last step (a full canvas with no stop): the whole canvas is final
        comp = x[:, width:]  # (B, N)
        for i, r in enumerate(rows):
            if not r.ticket.cancelled and not r.text.final and not self._stopping:
                self._deliver(r, r.text.update(comp[i].tolist(), complete=True))
        if self._stopping:
            for t in batch:
                if not t.done and not t.cancelled:
                    t.done = True
                    t.emit(JobFailed(503, "the server is shutting down"))
        served = sum(r.text.completion_tokens for r in rows if r.text.final)
        self.metrics.record_batch(len(rows), passes, served)

    def _after_step(self, rows: list[_Row], state: DecodeStep, want_canvas: bool) -> None:
        """Feed each row's grown settled prefix to its CompletionText; canvas states to live-view jobs."""
        P = state.prompt_length
        settled = state.settled.tolist()  # (B,)
        if want_canvas:  # the canvas first: a row's last text and ChoiceDone follow its last canvas
            for i, r in enumerate(rows):
                if r.ticket.job.canvas_events and not r.ticket.cancelled and not r.text.final:
                    ids = state.x[i, P:].tolist()
                    tokens = [None if t == self.mask_id else self.tokenizer.decode([t]) for t in ids]
                    r.ticket.emit(CanvasState(r.choice, state.step, tokens, settled[i], state.forward_passes))
        for i, r in enumerate(rows):
            if settled[i] > r.settled and not r.ticket.cancelled and not r.text.final:
                r.settled = settled[i]
                self._deliver(r, r.text.update(state.x[i, P:P + r.settled].tolist()))

    def _deliver(self, row: _Row, piece: str) -> None:
        t = row.ticket
        if piece:
            if t.first_text is None:
                t.first_text = time.monotonic()
                self.metrics.first_token_seconds.observe(t.first_text - t.submitted)
            t.emit(TextDelta(row.choice, piece))
        if row.text.final:
            t.completion_tokens += row.text.completion_tokens
            t._open_choices -= 1
            if t._open_choices == 0:  # before the last event: the client may cancel() as soon as it has it
                t.done = True
                self.metrics.record_request(t.job.prompt_tokens, t.completion_tokens,
                                            time.monotonic() - t.submitted)
            t.emit(ChoiceDone(row.choice, row.text.text, row.text.finish_reason or "length",
                              row.text.completion_tokens))
