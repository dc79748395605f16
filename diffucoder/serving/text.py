"""From a growing settled prefix of completion ids to final text pieces: end-of-text, ``max_tokens`` and stop
sequences, with nothing sent that could still change.

In this decoder a revealed token never changes, so the *settled* prefix (the completion tokens before the first
[MASK]) is final; :class:`CompletionText` turns each longer settled prefix into the new text that is safe to
send. It holds back

- trailing U+FFFD characters (an incomplete UTF-8 sequence whose next byte is in a token not yet settled), and
- a tail that could be the start of a stop sequence (``"\\n\\nde"`` with stop ``"\\n\\ndef"``),

so the pieces streamed add up exactly to the non-streamed answer. Stop sequences are applied to the decoded
*text* (as OpenAI does; a stop string may span several tokens or part of one); the answer ends before the
earliest occurrence, and a match is final only when no other stop sequence could still start earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]


class CompletionText:
    """The text state of one completion row.

    ``update(settled_ids, complete)`` with the current settled prefix (and ``complete=True`` once the canvas
    is fully decoded) returns the new text piece; once :attr:`final`, :attr:`text`, :attr:`finish_reason`
    ("stop": end-of-text or a stop sequence; "length": ``max_tokens`` reached) and :attr:`completion_tokens`
    (tokens of the returned text) are set.
    """

    def __init__(self, decode: Decode, stop_ids: Sequence[int], stop: Sequence[str], max_tokens: int) -> None:
        self.decode = decode
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.stop = tuple(stop)
        self.max_tokens = max_tokens
        self.emitted = ""
        self.final = False
        self.text = ""
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self._seen = -1

    def update(self, settled_ids: Sequence[int], complete: bool = False) -> str:
        """New text that is now final ("" if none); sets :attr:`final` when the answer cannot change."""
        if self.final or (len(settled_ids) == self._seen and not complete):
            return ""
        self._seen = len(settled_ids)
        ids = [int(i) for i in settled_ids]
        eos = next((k for k, t in enumerate(ids) if t in self.stop_ids), None)
        if eos is not None:
            ids = ids[:eos]
        length_hit = len(ids) >= self.max_tokens
        ids = ids[:self.max_tokens]
        ids_final = eos is not None or length_hit or complete
        text = self.decode(ids)
        known = text if ids_final else text.rstrip("\ufffd")
        hit = self._earliest_stop(known)
        pending = None if ids_final else self._pending_stop(known)
        if hit is not None and (pending is None or hit < pending):
            return self._finish(known[:hit], "stop", ids)
        if ids_final:
            return self._finish(known, "stop" if eos is not None else "length", ids, cut=False)
        safe = known if pending is None else known[:pending]
        return self._emit(safe)

    # -- helpers ------------------------------------------------------------------------------------------
    def _emit(self, safe: str) -> str:
        if len(safe) > len(self.emitted) and safe.startswith(self.emitted):
            piece = safe[len(self.emitted):]
            self.emitted = safe
            return piece
        return ""

    def _finish(self, text: str, reason: str, ids: list[int], cut: bool = True) -> str:
        piece = self._emit(text)
        self.final = True
        self.text = text
        self.finish_reason = reason
        self.completion_tokens = self._tokens_covering(ids, len(text)) if cut else len(ids)
        return piece

    def _earliest_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _pending_stop(self, text: str) -> int | None:
        """Earliest position whose tail is a proper prefix of a stop sequence (it may still become one)."""
        if not self.stop:
            return None
        longest = max(len(s) for s in self.stop)
        for q in range(max(0, len(text) - longest + 1), len(text)):
            tail = text[q:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.stop):
                return q
        return None

    def _tokens_covering(self, ids: list[int], n_chars: int) -> int:
        """Fewest leading ids whose text covers the first ``n_chars`` characters (binary search)."""
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.decode(ids[:mid]).rstrip("\ufffd")) >= n_chars:
                hi = mid
            else:
                lo = mid + 1
        return lo
