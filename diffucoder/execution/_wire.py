"""The plain-data channel between the program's process and the test process: a value codec and frames.

Standard library only: this module also runs inside the sandbox (see ``_zygote``).

Values travel as JSON text (``json``'s C parser does the work; nothing here ever unpickles or evaluates). JSON's
own types carry None, bool, int, float (NaN and infinities included), str and list; every JSON object is a tag
with exactly one key that rebuilds one of the other plain types:

    {"t": [...]} tuple          {"s": [...]} set            {"f": [...]} frozenset
    {"d": [k0, v0, k1, v1, ...]} dict (any hashable keys, insertion order kept)
    {"lt": [[...], ...]} a list of tuples (one tag for the whole list: the common EvalPlus output)
    {"i": "-1f..."} an int too long for a JSON number (hex: linear to parse)
    {"a": [k, kind, code, "base64"]} a long list of ints (int64) or floats packed as an array; with k > 0 a list
        of k-tuples (kind "t") or k-lists ("l") of them, flattened
    {"ix": [k, kind, [str, ...], code, "base64"]} the same for strings: a table of the distinct strings and the
        packed indices into it (outputs like EvalPlus's largest are lists of millions of tuples of a few words)
    {"c": [re, im]} complex     {"b": "base64"} bytes
    {"x": [name, ...]} a standard-library value type rebuilt from plain fields (``EXTENDED`` below:
        Decimal, Fraction, date/time/datetime/timedelta/timezone, namedtuple, OrderedDict, Counter,
        defaultdict, deque, bytearray, range)
    {"h": [id, "type"]} an object that is not data: a reference the receiving side cannot look into
    {"cb": n} a callable of the test process (test -> program only)
    {"bn": "len"} a built-in by name (test -> program; program -> test only for the types in ``SAFE_BUILTINS``)

A decoder built by ``decoder()`` accepts only these tags (each option switched on explicitly), so decoding
untrusted bytes can only ever build the listed types: anything else, a malformed tag, an unhashable set element
or dict key, a number with too many digits, or nesting deeper than the recursion limit raises ``WireError``.
Data is a tree: no shared references, no cycles (the encoder refuses them), so decoding is linear in its size.

Frames: 4-byte little-endian length, then the body; a body is ``b"\\n"``-joined JSON texts (a header, then one
text per value), which is unambiguous because ``json.dumps`` never writes a raw newline.
"""

from __future__ import annotations

import array
import binascii
import itertools
import json
import os
import select
import struct
import sys
import time

_FRAME = struct.Struct("<I")
PACK_MIN = 2048
"""Lists with at least this many scalars may travel packed (``{"a": ...}`` / ``{"ix": ...}``)."""
EXPANDED_LIMIT = 1 << 30
"""Most characters a packed string list may expand to (its table entries are shared, comparisons are not)."""
MAX_DEPTH = 400
"""Deepest nesting of containers the encoder accepts (tags count as a level)."""
INT_BITS = 9000
"""Ints longer than this travel as hex (JSON numbers are capped at 4300 digits by Python's int conversion)."""

SAFE_BUILTINS = frozenset({
    "int", "float", "complex", "bool", "str", "bytes", "bytearray", "list", "tuple", "dict", "set", "frozenset",
    "type", "object", "range", "slice", "NoneType",
})
"""Built-in types the program may name in an answer (``f() is int``); everything else it returns that is not
data becomes a reference."""


class WireError(ValueError):
    """Bytes that are not a valid message, or a value that cannot be sent."""


class Remote:
    """Base of objects that stand for something in the other process (a reference, ``{"h": ...}``)."""

    __slots__ = ()


_NoneType = type(None)
_NATIVE = frozenset({str, float, bool, _NoneType})
_NATIVE_INT = frozenset({str, float, bool, _NoneType, int})
_LIMIT = 1 << INT_BITS
_chain = itertools.chain.from_iterable


def _ints_fit(xs) -> bool:
    try:
        return -_LIMIT < min(xs) and max(xs) < _LIMIT
    except TypeError:  # mixed with str etc.: check one by one
        return all(-_LIMIT < v < _LIMIT for v in xs if type(v) is int)


def _flat_ok(xs) -> bool:
    """Every element is a JSON-native scalar (ints in range), checked at C speed for the common case."""
    kinds = set(map(type, xs))
    if kinds <= _NATIVE:
        return True
    if kinds <= _NATIVE_INT:
        return _ints_fit([v for v in xs if type(v) is int] if len(kinds) > 2 else xs) if int in kinds else True
    return False


_I64 = 1 << 63


def _pack(xs: list, kinds: set):
    """A long homogeneous list as a packed array (or None): ints / floats, strings through a table, or a list of
    same-length tuples or lists of those (flattened). Everything here loops in C, without copying the elements."""
    k, kind, n = 0, "", len(xs)
    flat = lambda: xs  # noqa: E731 - an iterable over the scalars, made anew for each pass
    if kinds == {tuple} or kinds == {list}:
        lens = set(map(len, xs))
        if len(lens) != 1:
            return None
        k = lens.pop()
        if not 0 < k <= 10_000:
            return None
        kind, n = ("t" if kinds == {tuple} else "l"), n * k
        flat = lambda: _chain(xs)  # noqa: E731
        if n < PACK_MIN:
            return None
        first = set(map(type, xs[0]))
    else:
        if n < PACK_MIN:
            return None
        first = kinds
    if first == {str}:
        distinct = set(flat())  # equal keys collapse: only exact str keys are accepted below
        if len(distinct) * 2 > n or set(map(type, distinct)) != {str}:
            return None  # few repeats (plain JSON is as small), or not all strings
        table = sorted(distinct)  # a deterministic order: re-encoding an unchanged argument gives the same bytes
        index = dict(zip(table, range(len(table))))
        if len(table) <= 1 << 8:
            code, packed = "B", bytes(map(index.__getitem__, flat()))
        else:
            code = "H" if len(table) <= 1 << 16 else "I"
            arr = array.array(code)
            arr.fromlist(list(map(index.__getitem__, flat())))
            packed = arr.tobytes()
        return {"ix": [k, kind, table, code, binascii.b2a_base64(packed, newline=False).decode()]}
    if first == {int} or first == {float}:
        if set(map(type, flat())) != first:  # bools would pass for ints in an array: check every element
            return None
        if first == {int}:
            if not (-_I64 <= min(flat()) and max(flat()) < _I64):
                return None
            code = "q"
        else:
            code = "d"
        return {"a": [k, kind, code, binascii.b2a_base64(array.array(code, flat()).tobytes(), newline=False).decode()]}
    return None


def _unpack(k, kind, values, n):
    """Rebuild a packed list from an iterator over its ``n`` scalars."""
    if k == 0:
        if kind != "":
            raise WireError("malformed value")
        return list(values)
    if kind not in ("t", "l") or type(k) is not int or not 0 < k <= 10_000 or n % k:
        raise WireError("malformed value")
    rows = zip(*[iter(values)] * k)
    return list(rows) if kind == "t" else list(map(list, rows))


def _std(name: str):
    return sys.modules.get(name)


class Encoder:
    """Turns a value into JSON-able structures. ``other(obj)`` handles anything that is not plain data (return a
    JSON-able tag, or raise ``WireError``); ``plain`` is cleared when ``other`` was used."""

    def __init__(self, other=None):
        self.other = other
        self.plain = True
        self._active: set[int] = set()

    def dumps(self, value) -> bytes:
        self.plain = True
        limit = sys.getrecursionlimit()
        if limit < 4 * MAX_DEPTH + 500:  # three Python frames per level (pure-Python calls: no C stack used)
            sys.setrecursionlimit(4 * MAX_DEPTH + 500)
        try:
            obj = self.enc(value, 0)
        except RecursionError:
            raise WireError(f"data nested deeper than {MAX_DEPTH} levels") from None
        finally:
            if limit < 4 * MAX_DEPTH + 500:
                sys.setrecursionlimit(limit)
        try:
            return json.dumps(obj, ensure_ascii=True, check_circular=False, separators=(",", ":")).encode("ascii")
        except (ValueError, TypeError, RecursionError) as e:
            raise WireError(f"cannot encode: {e}") from None

    def enc(self, x, depth):
        t = type(x)
        if t is str or t is float or t is bool or x is None:
            return x
        if t is int:
            return x if -_LIMIT < x < _LIMIT else {"i": format(x, "x")}
        if depth > MAX_DEPTH:
            raise WireError(f"data nested deeper than {MAX_DEPTH} levels")
        if t is list:
            if len(x) >= PACK_MIN:
                packed = _pack(x, set(map(type, x)))
                if packed is not None:
                    return packed
            if _flat_ok(x):
                return x
            return self._seq(x, depth)
        if t is tuple:
            return {"t": x if _flat_ok(x) else self._seq(x, depth + 1)}
        if t is dict:
            return {"d": self._pairs(x, depth)}
        if t is set or t is frozenset:
            items = x if _flat_ok(x) else self._seq(x, depth + 1)
            return {"s" if t is set else "f": list(items)}
        if t is bytes:
            return {"b": binascii.b2a_base64(x, newline=False).decode("ascii")}
        if t is complex:
            return {"c": [x.real, x.imag]}
        ext = self._extended(x, t, depth)
        if ext is not None:
            return ext
        base = self._builtin_base(x, t)
        if base is not None:
            return self.enc(base, depth)
        if self.other is None:
            raise WireError(f"an object of type {t.__name__} is not data")
        self.plain = False
        return self.other(x)

    def _seq(self, xs, depth):
        key = id(xs)
        if key in self._active:
            raise WireError("cyclic data")
        self._active.add(key)
        try:
            if type(xs) is list:
                kinds = set(map(type, xs))
                packed = _pack(xs, kinds) if len(xs) >= PACK_MIN // 16 else None
                if packed is not None:
                    return packed
                if kinds == {tuple} and _flat_ok(list(_chain(xs))):
                    return {"lt": xs}
            return [self.enc(v, depth + 1) for v in xs]
        finally:
            self._active.discard(key)

    def _pairs(self, d, depth):
        flat = list(_chain(dict.items(d)))
        if _flat_ok(flat):
            return flat
        key = id(d)
        if key in self._active:
            raise WireError("cyclic data")
        self._active.add(key)
        try:
            return [self.enc(v, depth + 1) for v in flat]
        finally:
            self._active.discard(key)

    def _extended(self, x, t, depth):
        m = _std("collections")
        if m is not None:
            if t is m.OrderedDict:
                return {"x": ["od", self._pairs(x, depth + 1)]}
            if t is m.Counter:
                return {"x": ["ctr", self._pairs(x, depth + 1)]}
            if t is m.defaultdict:
                f = x.default_factory
                fname = f.__name__ if f is not None and getattr(_builtins(), getattr(f, "__name__", ""), None) is f \
                    and f.__name__ in _FACTORIES else None
                return {"x": ["dd", fname, self._pairs(x, depth + 1)]}
            if t is m.deque:
                return {"x": ["dq", x.maxlen, self._seq(list(x), depth + 1)]}
        if issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple):  # a namedtuple
            fields = list(t._fields)
            if all(type(f) is str for f in fields) and len(fields) == tuple.__len__(x):
                return {"x": ["nt", t.__name__, fields, self._seq(list(tuple.__iter__(x)), depth + 1)]}
        if t is bytearray:
            return {"x": ["ba", binascii.b2a_base64(x, newline=False).decode("ascii")]}
        if t is range:
            return {"x": ["rng", self.enc(x.start, 0), self.enc(x.stop, 0), self.enc(x.step, 0)]}
        m = _std("decimal")
        if m is not None and t is m.Decimal:
            return {"x": ["dec", str(x)]}
        m = _std("fractions")
        if m is not None and t is m.Fraction:
            return {"x": ["frac", self.enc(x.numerator, 0), self.enc(x.denominator, 0)]}
        m = _std("datetime")
        if m is not None:
            if t is m.datetime:
                return {"x": ["dt", x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond,
                              self._tz(x.tzinfo, m, depth), x.fold]}
            if t is m.date:
                return {"x": ["date", x.year, x.month, x.day]}
            if t is m.time:
                return {"x": ["time", x.hour, x.minute, x.second, x.microsecond, self._tz(x.tzinfo, m, depth),
                              x.fold]}
            if t is m.timedelta:
                return {"x": ["td", x.days, x.seconds, x.microseconds]}
            if t is m.timezone:
                return self._tz(x, m, depth)
        return None

    def _tz(self, tz, m, depth):
        if tz is None:
            return None
        if type(tz) is not m.timezone:
            self.plain = False
            if self.other is None:
                raise WireError(f"time zone {type(tz).__name__} is not data")
            return self.other(tz)
        off = tz.utcoffset(None)
        name = tz.tzname(None)
        default = m.timezone(off).tzname(None)
        return {"x": ["tz", off.days, off.seconds, off.microseconds, None if name == default else name]}

    @staticmethod
    def _builtin_base(x, t):
        """A subclass of a built-in type travels as that type's own data, read through the base type's slots (so an
        overridden ``__iter__`` or ``__eq__`` plays no part)."""
        if isinstance(x, int):  # bool cannot be subclassed; IntEnum, IntFlag land here
            return int.__index__(x)
        if isinstance(x, float):
            return float.__float__(x)
        if isinstance(x, str):
            return str.__str__(x)
        if isinstance(x, bytes):
            return b"".join((x,))
        if isinstance(x, complex):
            return complex(complex.real.__get__(x), complex.imag.__get__(x))
        if isinstance(x, list):
            return list(list.__iter__(x))
        if isinstance(x, tuple):
            return tuple(tuple.__iter__(x))
        if isinstance(x, dict):
            return dict(dict.items(x))
        if isinstance(x, frozenset):
            return frozenset(frozenset.__iter__(x))
        if isinstance(x, set):
            return set(set.__iter__(x))
        return None


_FACTORIES = frozenset({"int", "float", "str", "list", "dict", "set", "tuple", "bool", "frozenset", "bytes",
                        "complex"})


def _builtins():
    import builtins

    return builtins


def decoder(*, handle=None, callback=None, builtin=None):
    """A function ``bytes -> value`` for one direction of the channel.

    ``handle(id, typename)``, ``callback(n)``, ``builtin(name)`` build the objects for those tags; a tag whose
    builder is None is refused. Every other tag rebuilds a plain value or raises ``WireError``.
    """
    import builtins as _b

    tup, fset, lst, dct, _set, _type, _len, _int, _str, _float, _bool = (
        tuple, frozenset, list, dict, set, type, len, int, str, float, bool)
    numbers = (int, float)

    def need(cond):
        if not cond:
            raise WireError("malformed value")

    def as_int(v):
        need(_type(v) is _int)
        return v

    def spread(keys):
        # a set or dict whose keys share one hash (ints congruent mod 2**61 - 1) would take quadratic time to build
        if _len(keys) > 512 and _len(_set(map(hash, keys))) * 4 < _len(keys):
            raise WireError("too many hash collisions")

    def pairs_dict(v, cls=dict):
        need(_type(v) is lst and _len(v) % 2 == 0)
        spread(v[::2])
        it = iter(v)
        return cls(zip(it, it))

    def ext(v):
        need(_type(v) is lst and v and _type(v[0]) is _str)
        name, args = v[0], v[1:]
        if name == "od":
            need(_len(args) == 1)
            return pairs_dict(args[0], _std_import("collections").OrderedDict)
        if name == "ctr":
            need(_len(args) == 1)
            c = _std_import("collections").Counter()
            dict.update(c, pairs_dict(args[0]))  # the counts as sent (Counter.update would add them)
            return c
        if name == "dd":
            need(_len(args) == 2 and (args[0] is None or args[0] in _FACTORIES))
            factory = None if args[0] is None else getattr(_b, args[0])
            return _std_import("collections").defaultdict(factory, pairs_dict(args[1]))
        if name == "dq":
            need(_len(args) == 2 and (args[0] is None or (_type(args[0]) is _int and args[0] >= 0))
                 and _type(args[1]) is lst)
            return _std_import("collections").deque(args[1], args[0])
        if name == "nt":
            need(_len(args) == 3 and _type(args[0]) is _str and _type(args[1]) is lst and _type(args[2]) is lst
                 and _len(args[1]) == _len(args[2]) and all(_type(f) is _str for f in args[1]))
            return _namedtuple(args[0], tup(args[1]))(*args[2])
        if name == "ba":
            need(_len(args) == 1 and _type(args[0]) is _str)
            return bytearray(binascii.a2b_base64(args[0]))
        if name == "rng":
            need(_len(args) == 3 and all(_type(a) is _int for a in args))
            return range(*args)
        if name == "dec":
            need(_len(args) == 1 and _type(args[0]) is _str and _len(args[0]) < 1_000_000)
            return _std_import("decimal").Decimal(args[0])
        if name == "frac":
            need(_len(args) == 2 and _type(args[0]) is _int and _type(args[1]) is _int and args[1] != 0
                 and args[0].bit_length() < 100_000 and args[1].bit_length() < 100_000)  # gcd is superlinear
            return _std_import("fractions").Fraction(args[0], args[1])
        m = _std_import("datetime")
        if name == "date":
            need(_len(args) == 3 and all(_type(a) is _int for a in args))
            return m.date(*args)
        if name == "dt":
            need(_len(args) == 9 and all(_type(a) is _int for a in args[:7]) and _type(args[8]) is _int
                 and (args[7] is None or _type(args[7]) is m.timezone))
            return m.datetime(*args[:7], tzinfo=args[7], fold=args[8])
        if name == "time":
            need(_len(args) == 6 and all(_type(a) is _int for a in args[:4]) and _type(args[5]) is _int
                 and (args[4] is None or _type(args[4]) is m.timezone))
            return m.time(*args[:4], tzinfo=args[4], fold=args[5])
        if name == "td":
            need(_len(args) == 3 and all(_type(a) is _int for a in args))
            return m.timedelta(days=args[0], seconds=args[1], microseconds=args[2])
        if name == "tz":
            need(_len(args) == 4 and all(_type(a) is _int for a in args[:3])
                 and (args[3] is None or _type(args[3]) is _str))
            off = m.timedelta(days=args[0], seconds=args[1], microseconds=args[2])
            return m.timezone(off) if args[3] is None else m.timezone(off, args[3])
        raise WireError(f"unknown value type {name[:40]!r}")

    def hook(pairs):
        if _len(pairs) != 1:
            raise WireError("malformed value")
        tag, v = pairs[0]
        if tag == "t":
            need(_type(v) is lst)
            return tup(v)
        if tag == "lt":
            need(_type(v) is lst and (not v or set(map(_type, v)) == {lst}))
            return lst(map(tup, v))
        if tag == "d":
            return pairs_dict(v)
        if tag == "s":
            need(_type(v) is lst)
            spread(v)
            return _set(v)
        if tag == "f":
            need(_type(v) is lst)
            spread(v)
            return fset(v)
        if tag == "i":
            need(_type(v) is _str and 0 < _len(v) and v.lstrip("-").isalnum())
            return _int(v, 16)
        if tag == "c":
            need(_type(v) is lst and _len(v) == 2 and all(_type(p) in numbers for p in v))
            return complex(v[0], v[1])
        if tag == "b":
            need(_type(v) is _str)
            return binascii.a2b_base64(v)
        if tag == "a":
            need(_type(v) is lst and _len(v) == 4 and v[2] in ("q", "d") and _type(v[3]) is _str)
            arr = array.array(v[2])
            raw = binascii.a2b_base64(v[3])
            need(_len(raw) % arr.itemsize == 0)
            arr.frombytes(raw)
            return _unpack(v[0], v[1], arr.tolist(), _len(arr))
        if tag == "ix":
            need(_type(v) is lst and _len(v) == 5 and _type(v[2]) is lst and v[3] in ("B", "H", "I")
                 and _type(v[4]) is _str and v[2] and set(map(_type, v[2])) == {_str})
            table = v[2]
            idx = array.array(v[3])
            raw = binascii.a2b_base64(v[4])
            need(_len(raw) % idx.itemsize == 0)
            idx.frombytes(raw)
            if max(map(_len, table)) * _len(idx) > EXPANDED_LIMIT:  # its entries are shared; comparisons are not
                raise WireError("a packed list that expands past the limit")
            return _unpack(v[0], v[1], map(table.__getitem__, idx), _len(idx))
        if tag == "x":
            return ext(v)
        if tag == "h" and handle is not None:
            need(_type(v) is lst and _len(v) == 2 and _type(v[0]) is _int and _type(v[1]) is _str)
            return handle(v[0], v[1][:200])
        if tag == "cb" and callback is not None:
            return callback(as_int(v))
        if tag == "bn" and builtin is not None:
            need(_type(v) is _str)
            return builtin(v)
        raise WireError(f"unknown tag {str(tag)[:40]!r}")

    dec = json.JSONDecoder(object_pairs_hook=hook)
    raw = dec.decode

    def decode(data):
        try:
            return raw(data.decode("ascii") if _type(data) is not _str else data)
        except WireError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, binascii.Error) as e:
            raise WireError(f"malformed value: {type(e).__name__}: {str(e)[:100]}") from None

    return decode


def _std_import(name):
    m = sys.modules.get(name)
    if m is None:
        import importlib

        m = importlib.import_module(name)
    return m


_NT_CACHE: dict = {}


def _namedtuple(typename: str, fields: tuple):
    key = (typename, fields)
    cls = _NT_CACHE.get(key)
    if cls is None:
        import keyword

        ok = typename.isidentifier() and not keyword.iskeyword(typename) and len(fields) < 256 and all(
            f.isidentifier() and not keyword.iskeyword(f) and not f.startswith("_") for f in fields) \
            and len(set(fields)) == len(fields)
        if not ok:
            raise WireError("malformed namedtuple")
        cls = _std_import("collections").namedtuple(typename, fields)
        if len(_NT_CACHE) < 1000:
            _NT_CACHE[key] = cls
    return cls


# ----------------------------------------------------------------------------------------------------------------
# Frames


def join(header, segments=()) -> bytes:
    """One frame body: the JSON header, then the (already encoded) value segments."""
    head = json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return b"\n".join((head, *segments)) if segments else head


def split(body: bytes) -> tuple[list, list[bytes]]:
    """(header, segments) of a frame body; the header must be a JSON array."""
    head, *segments = bytes(body).split(b"\n")
    try:
        header = json.loads(head.decode("ascii"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WireError("malformed header") from None
    if type(header) is not list or not header:
        raise WireError("malformed header")
    return header, segments


class Closed(EOFError):
    """The other side closed the channel."""


class Deadline(TimeoutError):
    """The deadline passed while waiting."""


def _serve_side(side, ready) -> None:
    for fd in ready:
        cb = side.get(fd)
        if cb is not None:
            cb(fd)


def send(fd: int, body: bytes, deadline: float | None = None, side: dict | None = None) -> None:
    """Write one frame (blocking; with a deadline the descriptor must be non-blocking). ``side``: descriptors to
    serve while waiting, ``{fd: callback(fd)}`` (the other process's output pipes, which must not fill up)."""
    data = memoryview(_FRAME.pack(len(body)) + body)
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Deadline from None
            r, _, _ = select.select(list(side or ()), [fd], [], left)
            if r:
                _serve_side(side, r)
            continue
        except BrokenPipeError:
            raise Closed from None
        data = data[n:]


class Reader:
    """Reads frames from a descriptor with a size cap and deadlines; ``poll`` is called while waiting (it may
    raise to abort); ``side`` as for ``send``."""

    def __init__(self, fd: int, cap: int, side: dict | None = None):
        self.fd, self.cap = fd, cap
        self.side = side if side is not None else {}
        self.buf = bytearray()

    def _fill(self, need: int, deadline: float | None, poll, poll_every: float) -> None:
        while len(self.buf) < need:
            if poll is not None:
                poll()
            now = time.monotonic()
            wait = poll_every if deadline is None else min(poll_every, deadline - now)
            if deadline is not None and wait <= 0:
                raise Deadline
            r, _, _ = select.select([self.fd, *self.side], [], [], wait)
            if not r:
                continue
            if self.side:
                _serve_side(self.side, r)
                if self.fd not in r:
                    continue
            try:
                chunk = os.read(self.fd, max(65536, min(need - len(self.buf), 1 << 24)))
            except BlockingIOError:
                continue
            except OSError:
                raise Closed from None
            if not chunk:
                raise Closed
            self.buf += chunk

    def frame(self, deadline: float | None = None, poll=None, poll_every: float = 3600.0) -> bytes:
        self._fill(4, deadline, poll, poll_every)
        (n,) = _FRAME.unpack_from(self.buf)
        if n > self.cap:
            raise WireError(f"a message of {n} bytes is over the limit of {self.cap}")
        self._fill(4 + n, deadline, poll, poll_every)
        body = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return body
