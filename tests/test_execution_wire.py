"""The plain-data codec between the program's process and the tests (``diffucoder.execution._wire``).

Round trips of every type that may cross, and refusal of everything else: the decoder runs on bytes a hostile
program wrote, so it must only ever build the listed types, in time linear in the input, without recursing
without bound.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import fractions
import math
import os
import time
import typing

import pytest

from diffucoder.execution import _wire

P = collections.namedtuple("P", "x y")


class N(typing.NamedTuple):
    a: int
    b: str = "z"


class Color(enum.IntEnum):
    RED = 3


VALUES = [
    None, True, False, 0, -5, 2 ** 100, -(2 ** 20000), 1.5, -0.0, float("inf"), float("-inf"), 1 + 2j,
    "", "x\ud800y", "héllo\n\"", b"", b"\x00\xff", [1, 2, 3], [], (1,), (), [(1, "a"), (2, "b")], [[1, 2], [3]],
    {1: "a", (1, 2): [3]}, {"a": 1}, {}, {1, 2}, set(), frozenset({(1, 2)}), [True, 1, 1.0, None, "a"],
    [2 ** 9500], [1, "a", 2 ** 9500], {"k": (1, [2, {3}])}, [[(1,)]], ([1], {2: 3}),
    collections.OrderedDict(a=1, b=2), collections.Counter("aab"), collections.defaultdict(list, {"a": [1]}),
    collections.deque([1, 2], 5), bytearray(b"ab"), range(1, 10, 2), decimal.Decimal("1.10"),
    decimal.Decimal("-Infinity"), fractions.Fraction(1, 3), datetime.date(2020, 1, 2),
    datetime.datetime(2020, 1, 2, 3, 4, 5, 6), datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc),
    datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-3), "X")),
    datetime.time(1, 2, 3, 4), datetime.timedelta(days=-1, seconds=5, microseconds=7),
]


def roundtrip(v):
    return _wire.decoder()(_wire.Encoder().dumps(v))


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_plain_values_round_trip_with_their_type(value):
    got = roundtrip(value)
    assert got == value and type(got) is type(value)


def test_nan_and_negative_zero_survive():
    assert math.isnan(roundtrip(float("nan")))
    assert math.copysign(1, roundtrip(-0.0)) == -1


def test_subclasses_travel_as_their_base_data_or_rebuilt_library_type():
    nt = roundtrip(P(1, 2))
    assert nt == (1, 2) and nt.x == 1 and type(nt).__name__ == "P"
    assert roundtrip(N(1)) == (1, "z") and roundtrip(N(1)).b == "z"
    assert roundtrip(Color.RED) == 3 and type(roundtrip(Color.RED)) is int
    assert roundtrip(collections.defaultdict(int))["missing"] == 0  # built-in factories are kept

    class Liar(list):
        def __iter__(self):
            return iter([1, 2])

        def __eq__(self, other):
            return True

    got = roundtrip(Liar([7, 7]))
    assert got == [7, 7] and type(got) is list  # the stored data, read past the overridden __iter__


def test_non_data_is_refused_without_a_handler_and_referenced_with_one():
    class Obj:
        pass

    with pytest.raises(_wire.WireError, match="not data"):
        _wire.Encoder().dumps([Obj()])
    seen = []
    enc = _wire.Encoder(lambda o: (seen.append(o), {"h": [7, "Obj"]})[1])
    text = enc.dumps({"k": [Obj()]})
    assert not enc.plain and len(seen) == 1
    got = _wire.decoder(handle=lambda i, t: ("ref", i, t))(text)
    assert got == {"k": [("ref", 7, "Obj")]}
    with pytest.raises(_wire.WireError):  # a decoder built without a handle builder refuses references
        _wire.decoder()(text)


def test_cycles_and_depth_are_refused_by_the_encoder():
    a = []
    a.append(a)
    with pytest.raises(_wire.WireError, match="cyclic"):
        _wire.Encoder().dumps(a)
    deep = []
    for _ in range(_wire.MAX_DEPTH + 10):
        deep = [deep, 1]
    with pytest.raises(_wire.WireError, match="deeper"):
        _wire.Encoder().dumps(deep)


HOSTILE = [
    b'{"t":1}', b'{"q":1}', b'{"t":[],"s":[]}', b'{"s":[[1]]}', b'{"d":[1]}', b'{"d":[[1],2]}', b"\xff",
    b'{"i":"zz"}', b'{"lt":["ab"]}', b'{"x":["nt","a b",["x"],[1]]}', b'{"x":["nt","A",["_x"],[1]]}',
    b'{"x":["os","system"]}', b'{"x":["dd","eval",[]]}', b'{"x":["frac",1,0]}', b'{"c":["1",2]}',
    b'{"h":[1,"x"]}', b'{"cb":1}', b'{"bn":"len"}', b'[1,2', b"", b"1" * 5000,
    b"[" * 100_000 + b"]" * 100_000, b'{"t":' * 50_000 + b"[]" + b"}" * 50_000,
    b'{"x":["dt",2020,13,1,0,0,0,0,null,0]}',
]


@pytest.mark.parametrize("data", HOSTILE, ids=lambda d: repr(d[:30]))
def test_hostile_bytes_are_refused_cleanly(data):
    with pytest.raises(_wire.WireError):
        _wire.decoder()(data)


def test_builtins_by_name_only_when_allowed():
    dec = _wire.decoder(builtin=lambda name: {"int": int}[name])
    assert dec(b'{"bn":"int"}') is int


def test_decoding_is_linear_and_fast():
    big = [(i, str(i)) for i in range(200_000)]
    text = _wire.Encoder().dumps(big)
    t0 = time.perf_counter()
    assert _wire.decoder()(text) == big
    small = [(i, str(i)) for i in range(20_000)]
    t1 = time.perf_counter()
    _wire.decoder()(_wire.Encoder().dumps(small))
    t2 = time.perf_counter()
    assert t1 - t0 < 3.0 and (t1 - t0) < 40 * (t2 - t1) + 0.5
    # a long int as hex parses in linear time (a decimal one would be refused by the digit limit)
    huge = 7 ** 2_000_000
    t0 = time.perf_counter()
    assert roundtrip(huge) == huge
    assert time.perf_counter() - t0 < 3.0


def test_frames_carry_segments_and_the_reader_enforces_its_cap():
    r, w = os.pipe()
    try:
        _wire.send(w, _wire.join(["ok", 1], [b"[1]", b'"x"']))
        header, segs = _wire.split(_wire.Reader(r, 1 << 20).frame(time.monotonic() + 5))
        assert header == ["ok", 1] and segs == [b"[1]", b'"x"']
        os.write(w, (1 << 30).to_bytes(4, "little"))
        with pytest.raises(_wire.WireError, match="over the limit"):
            _wire.Reader(r, 1 << 20).frame(time.monotonic() + 5)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(_wire.WireError):
        _wire.split(b"not json")


PACKED = {
    "ints": list(range(-3000, 3000)) + [2 ** 62, -(2 ** 63)],
    "floats": [i / 7 for i in range(5000)] + [float("inf"), -0.0],
    "strings": [str(i % 50) for i in range(5000)],
    "tuples_of_strings": [("a", "b", str(i % 3)) for i in range(3000)],
    "lists_of_ints": [[i, -i] for i in range(3000)],
    "tuples_of_floats": [(0.5, float(i)) for i in range(3000)],
}


@pytest.mark.parametrize("name", sorted(PACKED))
def test_long_homogeneous_lists_travel_packed_and_exactly(name):
    value = PACKED[name]
    text = _wire.Encoder().dumps(value)
    assert b'{"a":' in text or b'{"ix":' in text  # the packed form was used
    got = roundtrip(value)
    assert got == value and type(got) is list
    assert all(type(a) is type(b) for a, b in zip(got, value))
    assert [type(x) for row in got[:3] if isinstance(row, (tuple, list)) for x in row] == \
        [type(x) for row in value[:3] if isinstance(row, (tuple, list)) for x in row]


def test_lists_that_must_not_be_packed_keep_their_types():
    mixed = [True, 1] * 2000 + [2.5]  # bools would read back as ints from an int64 array
    assert roundtrip(mixed) == mixed and [type(x) for x in roundtrip(mixed)[:2]] == [bool, int]
    distinct = [str(i) for i in range(5000)]  # no repeats: plain JSON
    assert b'"ix"' not in _wire.Encoder().dumps(distinct) and roundtrip(distinct) == distinct
    assert roundtrip([2 ** 70] * 3000) == [2 ** 70] * 3000  # past int64


@pytest.mark.parametrize("data", [
    b'{"ix":[0,"",["a"],"B","AQ=="]}',            # index 1 into a table of 1
    b'{"ix":[0,"",[1],"B","AA=="]}',              # a table that is not strings
    b'{"ix":[0,"",["a"],"Q","AA=="]}',            # an index type not allowed
    b'{"ix":[2,"t",["a"],"B","AAAA"]}',           # 3 scalars are not rows of 2
    b'{"a":[0,"","q","AAA="]}',                   # bytes not a multiple of the item size
    b'{"a":[0,"","O","AAAAAAAAAAA="]}',           # not a numeric array
    b'{"a":[1,"x","q","AAAAAAAAAAA="]}',          # unknown row kind
], ids=range(7))
def test_malformed_packed_lists_are_refused(data):
    with pytest.raises(_wire.WireError):
        _wire.decoder()(data)


def test_a_packed_list_may_not_expand_past_the_limit(monkeypatch):
    monkeypatch.setattr(_wire, "EXPANDED_LIMIT", 10_000)
    text = _wire.Encoder().dumps(["x" * 100] * 3000)  # 300,000 characters from a 100-character table
    with pytest.raises(_wire.WireError, match="expands"):
        _wire.decoder()(text)
