"""CompletionText: what a streamed completion may send after each step (no server, no model).

A toy decoder maps ids to strings (id 0 = end-of-text); byte-level behaviour (a character split over two
tokens) is imitated by ids 10 and 11 whose bytes only decode together.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic")

from diffucoder.serving.text import CompletionText  # noqa: E402

PIECES = {1: "a", 2: "b", 3: "c", 4: "\n", 5: "de", 6: "f", 7: "ab"}
EOS = 0


def decode(ids):
    out = bytearray()
    for i in ids:
        if i == 10:
            out += "é".encode()[:1]
        elif i == 11:
            out += "é".encode()[1:]
        else:
            out += PIECES[i].encode()
    return out.decode("utf-8", errors="replace")


def stream(ids, stop=(), max_tokens=100, complete_at_end=True):
    """Feed growing prefixes; returns (pieces, CompletionText)."""
    ct = CompletionText(decode, [EOS], stop, max_tokens)
    pieces = []
    for k in range(len(ids) + 1):
        pieces.append(ct.update(ids[:k], complete=complete_at_end and k == len(ids)))
        if ct.final:
            break
    return pieces, ct


def test_pieces_add_up_and_eos_cuts():
    pieces, ct = stream([1, 2, 3, EOS, 1, 1])
    assert ct.final and ct.finish_reason == "stop"
    assert ct.text == "abc" == "".join(pieces)
    assert ct.completion_tokens == 3
    assert pieces[:4] == ["", "a", "b", "c"]  # each token sent as soon as it is settled


def test_max_tokens_cut_is_length():
    pieces, ct = stream([1, 2, 3, 1, 2], max_tokens=3)
    assert (ct.text, ct.finish_reason, ct.completion_tokens) == ("abc", "length", 3)
    assert "".join(pieces) == "abc"


def test_full_canvas_without_stop_is_length():
    _, ct = stream([1, 2])
    assert (ct.text, ct.finish_reason) == ("ab", "length")


def test_split_character_is_held_until_complete():
    ct = CompletionText(decode, [EOS], (), 100)
    assert ct.update([1]) == "a"
    assert ct.update([1, 10]) == ""  # half a character: nothing sent
    assert ct.update([1, 10, 11]) == "é"
    assert ct.emitted == "aé"


def test_stop_sequence_is_cut_and_held_back():
    # stop "\ndef": text "ab\nde" must not send "\nde" before knowing whether "f" follows
    ct = CompletionText(decode, [EOS], ("\ndef",), 100)
    assert ct.update([7]) == "ab"
    assert ct.update([7, 4]) == ""  # "\n" could start the stop sequence
    assert ct.update([7, 4, 5]) == ""
    assert not ct.final
    assert ct.update([7, 4, 5, 6]) == ""
    assert ct.final and ct.text == "ab" and ct.finish_reason == "stop"
    assert ct.completion_tokens == 1  # "ab" is one token


def test_held_back_tail_is_released_when_it_cannot_be_a_stop():
    ct = CompletionText(decode, [EOS], ("\ndef",), 100)
    ct.update([7, 4, 5])
    assert ct.update([7, 4, 5, 1]) == "\ndea"
    assert not ct.final


def test_earliest_stop_wins_even_if_found_later():
    # stops "b" and "abc": with "ab" settled, "b" is found at 1 but "abc" could still start at 0
    ct = CompletionText(decode, [EOS], ("b", "abc"), 100)
    assert ct.update([1, 2]) == ""
    assert not ct.final
    ct.update([1, 2, 3])
    assert ct.final and ct.text == ""  # "abc" at 0 is the earliest


def test_stop_inside_one_token():
    pieces, ct = stream([5, 6], stop=("e",))
    assert ct.text == "d" and ct.finish_reason == "stop" and ct.completion_tokens == 1
    assert "".join(pieces) == "d"


def test_stop_in_text_after_eos_is_ignored():
    _, ct = stream([1, EOS, 2], stop=("b",))
    assert ct.text == "a" and ct.finish_reason == "stop"
