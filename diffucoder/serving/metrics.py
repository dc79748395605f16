"""Prometheus metrics of one server (its own registry, so several engines in one process never collide).

Exposed by ``GET /metrics`` in the Prometheus text format. Counters are lifetime totals (``rate()`` them in
Prometheus); the two ``..._recent`` gauges are computed over the last ``window`` seconds at scrape time, for a
reader without Prometheus:

- ``diffucoder_requests_total{endpoint, status}``: HTTP answers by endpoint and status code;
- ``diffucoder_queue_depth`` (requests waiting), ``diffucoder_running_rows`` (canvas rows being decoded);
- ``diffucoder_prompt_tokens_total``, ``diffucoder_completion_tokens_total``;
- ``diffucoder_completion_tokens_per_second_recent``;
- ``diffucoder_batch_rows`` (histogram: rows per decode call), ``diffucoder_batches_total``;
- ``diffucoder_forward_passes_total`` and ``diffucoder_forward_passes_per_token_recent`` (forward passes of
  the model per completion token served: a batch's forward pass counts once however many rows it holds);
- ``diffucoder_request_seconds`` (histogram: submit to last token), ``diffucoder_first_token_seconds``
  (histogram: submit to the first settled text).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class ServerMetrics:
    """Thread-safe metrics; ``render()`` gives the text exposition."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0, running_rows: Callable[[], int] = lambda: 0,
                 window: float = 60.0) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.window = window
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int, int]] = deque()  # (time, completion tokens, forward passes)
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("diffucoder_requests", "HTTP answers by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("diffucoder_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.completion_tokens = Counter("diffucoder_completion_tokens", "completion tokens served", registry=r)
        self.forward_passes = Counter("diffucoder_forward_passes", "model forward passes (one per batch step)",
                                      registry=r)
        self.batches = Counter("diffucoder_batches", "decode calls (canvas batches)", registry=r)
        self.batch_rows = Histogram("diffucoder_batch_rows", "rows per decode call", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.request_seconds = Histogram("diffucoder_request_seconds", "submit to last token, seconds", registry=r,
                                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.first_token_seconds = Histogram("diffucoder_first_token_seconds",
                                             "submit to the first settled text, seconds", registry=r,
                                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        Gauge("diffucoder_queue_depth", "requests waiting for a batch", registry=r).set_function(queue_depth)
        Gauge("diffucoder_running_rows", "canvas rows being decoded now", registry=r).set_function(running_rows)
        Gauge("diffucoder_completion_tokens_per_second_recent",
              f"completion tokens per second over the last {window:g} s", registry=r
              ).set_function(lambda: self.recent()[0])
        Gauge("diffucoder_forward_passes_per_token_recent",
              f"forward passes per completion token over the last {window:g} s", registry=r
              ).set_function(lambda: self.recent()[1])

    def record_batch(self, rows: int, forward_passes: int, completion_tokens: int) -> None:
        self.batches.inc()
        self.batch_rows.observe(rows)
        self.forward_passes.inc(forward_passes)
        with self._lock:
            self._recent.append((time.monotonic(), completion_tokens, forward_passes))

    def record_request(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        self.request_seconds.observe(seconds)

    def recent(self) -> tuple[float, float]:
        """(completion tokens per second, forward passes per completion token) over the last window."""
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - self.window:
                self._recent.popleft()
            tokens = sum(t for _, t, _ in self._recent)
            passes = sum(p for _, _, p in self._recent)
        span = max(min(self.window, now - self._started), 1e-9)
        return tokens / span, (passes / tokens if tokens else 0.0)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
