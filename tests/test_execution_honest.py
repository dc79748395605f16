"""Correct programs must pass: a false fail lowers pass@k and hands RL a wrong reward.

Each case is an honest program that uses some part of the standard library (or a way of being tested) that a
sandbox is tempted to restrict: introspection, tracebacks, unittest, function defaults, threads, generators,
program-defined classes used by the tests, arguments changed in place, callables passed in, prints, files.
"""

from __future__ import annotations

import textwrap

import pytest

from diffucoder.execution import Job, SandboxConfig, SandboxPool


def src(s: str) -> str:
    return textwrap.dedent(s).strip() + "\n"


CASES: list[tuple[str, str, list[str], dict]] = [
    ("inspect", src("""
        import inspect
        def arity(f):
            return len(inspect.signature(f).parameters)
        def kinds():
            def g(a, b=1, *c, d, **e): pass
            return [p.kind.name for p in inspect.signature(g).parameters.values()]
        def caller():
            return inspect.stack()[0].function
    """), ["assert arity(lambda a, b: 0) == 2", "assert kinds()[:2] == ['POSITIONAL_OR_KEYWORD'] * 2",
           "assert caller() == 'caller'"], {}),
    ("traceback", src("""
        import traceback, sys
        def explain(x):
            try:
                return 1 / x
            except ZeroDivisionError:
                return traceback.format_exc().strip().splitlines()[-1]
        def depth():
            return len(traceback.extract_stack()) >= 1 and sys._getframe(0).f_code.co_name
    """), ["assert explain(0) == 'ZeroDivisionError: division by zero'", "assert explain(2) == 0.5",
           "assert depth() == 'depth'"], {}),
    ("unittest", src("""
        import io, unittest
        def add(a, b):
            return a + b
        class T(unittest.TestCase):
            def test_add(self):
                self.assertEqual(add(2, 2), 4)
        def self_test():
            suite = unittest.defaultTestLoader.loadTestsFromTestCase(T)
            return unittest.TextTestRunner(stream=io.StringIO()).run(suite).wasSuccessful()
    """), ["assert self_test() is True", "assert add(1, 2) == 3"], {}),
    ("namedtuple_defaults", src("""
        from collections import namedtuple
        Point = namedtuple('Point', 'x y z', defaults=(0, 0))
        def origin_shift(x):
            return Point(x)
    """), ["assert origin_shift(3) == (3, 0, 0)", "assert origin_shift(3).y == 0", "assert origin_shift(1).x == 1"],
     {}),
    ("dataclass_defaults", src("""
        from dataclasses import dataclass, field, astuple
        @dataclass(order=True)
        class Item:
            name: str
            qty: int = 1
            tags: list = field(default_factory=list)
        def make(n):
            return astuple(Item(n))
        def cheapest(items):
            return min(Item(*i) for i in items).name
    """), ["assert make('a') == ('a', 1, [])", "assert cheapest([('b', 2), ('a', 5)]) == 'a'"], {}),
    ("function_defaults_rebound", src("""
        def f(x, y=1):
            return x + y
        f.__defaults__ = (10,)
        def g(a, *, b=2):
            return a * b
        g.__kwdefaults__ = {'b': 3}
    """), ["assert f(1) == 11", "assert g(2) == 6"], {}),
    ("functools", src("""
        from functools import lru_cache, reduce, partial, cached_property, singledispatch, wraps, total_ordering
        @lru_cache(maxsize=None)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def product(xs):
            return reduce(lambda a, b: a * b, xs, 1)
        double = partial(lambda a, b: a * b, 2)
        @singledispatch
        def kind(x):
            return 'other'
        @kind.register
        def _(x: int):
            return 'int'
        def logged(f):
            @wraps(f)
            def inner(*a):
                return f(*a)
            return inner
        @logged
        def named():
            return named.__name__
    """), ["assert fib(80) == 23416728348467685", "assert product([2, 3, 4]) == 24", "assert double(21) == 42",
           "assert kind(1) == 'int' and kind('x') == 'other'", "assert named() == 'named'"], {}),
    ("typing", src("""
        from typing import List, Dict, Optional, Tuple, TypeVar, Generic, Protocol
        T = TypeVar('T')
        class Box(Generic[T]):
            def __init__(self, v: T) -> None:
                self.v = v
        def group(words: List[str]) -> Dict[int, List[str]]:
            out: Dict[int, List[str]] = {}
            for w in words:
                out.setdefault(len(w), []).append(w)
            return out
        def first(xs: List[T]) -> Optional[T]:
            return Box(xs[0]).v if xs else None
    """), ["assert group(['a', 'bb', 'c']) == {1: ['a', 'c'], 2: ['bb']}", "assert first([]) is None",
           "assert first([7]) == 7"], {}),
    ("enum", src("""
        from enum import Enum, IntEnum, Flag, auto
        class Color(Enum):
            RED = auto()
            GREEN = auto()
        class Level(IntEnum):
            LOW = 1
            HIGH = 2
        class Perm(Flag):
            R = 4
            W = 2
        def hottest():
            return max(Level)
        def names():
            return [c.name for c in Color]
        def perms():
            return (Perm.R | Perm.W).value
        def pick():
            return Color.GREEN
    """), ["assert hottest() == 2", "assert names() == ['RED', 'GREEN']", "assert perms() == 6",
           "assert pick().name == 'GREEN'", "assert pick() is not None"], {}),
    ("abc", src("""
        from abc import ABC, abstractmethod
        class Shape(ABC):
            @abstractmethod
            def area(self): ...
        class Sq(Shape):
            def __init__(self, s):
                self.s = s
            def area(self):
                return self.s ** 2
        def total(sides):
            return sum(Sq(s).area() for s in sides)
        def cannot_instantiate():
            try:
                Shape()
            except TypeError:
                return True
            return False
    """), ["assert total([1, 2]) == 5", "assert cannot_instantiate()"], {}),
    ("threading", src("""
        import threading
        def count(n, k):
            total = [0]
            lock = threading.Lock()
            def work():
                for _ in range(n):
                    with lock:
                        total[0] += 1
            ts = [threading.Thread(target=work) for _ in range(k)]
            for t in ts: t.start()
            for t in ts: t.join()
            return total[0]
        def with_event():
            e = threading.Event()
            threading.Timer(0.01, e.set).start()
            return e.wait(5)
    """), ["assert count(1000, 4) == 4000", "assert with_event() is True"], {}),
    ("thread_pool", src("""
        from concurrent.futures import ThreadPoolExecutor
        def squares(xs):
            with ThreadPoolExecutor(max_workers=4) as ex:
                return list(ex.map(lambda x: x * x, xs))
    """), ["assert squares(range(10)) == [x * x for x in range(10)]"], {}),
    ("asyncio", src("""
        import asyncio
        async def twice(x):
            await asyncio.sleep(0)
            return 2 * x
        def run(xs):
            async def main():
                return await asyncio.gather(*(twice(x) for x in xs))
            return asyncio.run(main())
    """), ["assert run([1, 2, 3]) == [2, 4, 6]"], {}),
    ("contextlib", src("""
        import contextlib, io
        @contextlib.contextmanager
        def tag(out, name):
            out.append('<' + name + '>')
            yield
            out.append('</' + name + '>')
        def html():
            out = []
            with tag(out, 'b'):
                out.append('x')
            return ''.join(out)
        def quiet():
            with contextlib.suppress(KeyError):
                {}['k']
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                print('captured')
            return buf.getvalue()
    """), ["assert html() == '<b>x</b>'", "assert quiet() == 'captured\\n'"], {}),
    ("io", src("""
        import io, csv
        def rows(text):
            return list(csv.reader(io.StringIO(text)))
        def to_bytes(s):
            b = io.BytesIO()
            b.write(s.encode())
            return b.getvalue()
    """), ["assert rows('a,b\\n1,2\\n') == [['a', 'b'], ['1', '2']]", "assert to_bytes('hé') == 'hé'.encode()"],
     {}),
    ("re", src("""
        import re
        def emails(text):
            return re.findall(r'[\\w.]+@[\\w.]+', text)
        def match(s):
            return re.match(r'(a+)(b*)', s)
        def swap(s):
            return re.sub(r'(\\w+) (\\w+)', r'\\2 \\1', s)
    """), ["assert emails('x a@b.c y d@e.f') == ['a@b.c', 'd@e.f']", "assert match('aab')",
           "assert match('aab').group(1) == 'aa'", "assert not match('b')", "assert swap('hello world') == "
           "'world hello'"], {}),
    ("json", src("""
        import json
        def roundtrip(obj):
            return json.loads(json.dumps(obj, sort_keys=True))
        def pretty(obj):
            return json.dumps(obj, indent=1)
    """), ["assert roundtrip({'b': [1, 2.5, None], 'a': True}) == {'a': True, 'b': [1, 2.5, None]}",
           "import json\nassert json.loads(pretty({'x': 1})) == {'x': 1}"], {}),
    ("decimal", src("""
        from decimal import Decimal, getcontext, ROUND_HALF_UP
        def money(x):
            return Decimal(x).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)
        def precise():
            getcontext().prec = 50
            return str(Decimal(1) / Decimal(7))[:20]
    """), ["from decimal import Decimal\nassert money('2.675') == Decimal('2.68')",
           "assert precise() == '0.142857142857142857'"], {}),
    ("fractions", src("""
        from fractions import Fraction
        def harmonic(n):
            return sum(Fraction(1, k) for k in range(1, n + 1))
    """), ["from fractions import Fraction\nassert harmonic(3) == Fraction(11, 6)",
           "assert harmonic(4).denominator == 12"], {}),
    ("datetime", src("""
        from datetime import date, datetime, timedelta, timezone
        def add_days(d, n):
            return d + timedelta(days=n)
        def weekday(s):
            return datetime.strptime(s, '%Y-%m-%d').strftime('%A')
        def utc(ts):
            return datetime.fromtimestamp(ts, tz=timezone.utc)
    """), ["from datetime import date\nassert add_days(date(2024, 2, 28), 1) == date(2024, 2, 29)",
           "assert weekday('2024-01-01') == 'Monday'",
           "from datetime import datetime, timezone\nassert utc(0) == datetime(1970, 1, 1, tzinfo=timezone.utc)"],
     {}),
    ("heapq_bisect", src("""
        import heapq, bisect
        def k_smallest(xs, k):
            return heapq.nsmallest(k, xs)
        def merge(*lists):
            return list(heapq.merge(*lists))
        def rank(xs, x):
            return bisect.bisect_left(sorted(xs), x)
    """), ["assert k_smallest([5, 1, 4, 2], 2) == [1, 2]", "assert merge([1, 4], [2, 3]) == [1, 2, 3, 4]",
           "assert rank([3, 1, 2], 2) == 1"], {}),
    ("deep_recursion", src("""
        import sys
        sys.setrecursionlimit(100000)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
    """), ["assert depth(20000) == 20000"], {}),
    ("generators", src("""
        def evens():
            n = 0
            while True:
                yield n
                n += 2
        def take(it, k):
            out = []
            for x in it:
                if len(out) == k:
                    break
                out.append(x)
            return out
        def chunks(xs, n):
            for i in range(0, len(xs), n):
                yield xs[i:i + n]
        def flat(xss):
            for xs in xss:
                yield from xs
    """), ["assert take(evens(), 3) == [0, 2, 4]", "assert list(chunks([1, 2, 3], 2)) == [[1, 2], [3]]",
           "import itertools\nassert list(itertools.islice(evens(), 2)) == [0, 2]",
           "assert sum(flat([[1], [2, 3]])) == 6", "assert next(evens()) == 0"], {}),
    ("itertools_collections", src("""
        import itertools
        from collections import Counter, OrderedDict, defaultdict, deque
        def pairs(xs):
            return list(itertools.combinations(xs, 2))
        def freq(s):
            return Counter(s)
        def window(xs, k):
            d = deque(maxlen=k)
            out = []
            for x in xs:
                d.append(x)
                out.append(sum(d))
            return out
        def index(words):
            d = defaultdict(list)
            for i, w in enumerate(words):
                d[w[0]].append(i)
            return d
        def ordered():
            return OrderedDict([('b', 1), ('a', 2)])
    """), ["assert pairs([1, 2, 3]) == [(1, 2), (1, 3), (2, 3)]", "assert freq('aab') == {'a': 2, 'b': 1}",
           "assert freq('aab').most_common(1) == [('a', 2)]", "assert window([1, 2, 3], 2) == [1, 3, 5]",
           "assert index(['ab', 'ac', 'b']) == {'a': [0, 1], 'b': [2]}", "assert list(ordered()) == ['b', 'a']"],
     {}),
    ("math_statistics", src("""
        import math, statistics
        def hyp(a, b):
            return math.hypot(a, b)
        def spread(xs):
            return statistics.pstdev(xs)
        def primes(n):
            return [p for p in range(2, n) if all(p % d for d in range(2, math.isqrt(p) + 1))]
    """), ["assert abs(hyp(3, 4) - 5.0) < 1e-9", "import math\nassert math.isclose(spread([1, 3]), 1.0)",
           "assert primes(12) == [2, 3, 5, 7, 11]"], {}),
    ("strings", src("""
        import string, textwrap
        def caesar(s, k):
            a = string.ascii_lowercase
            return s.translate(str.maketrans(a, a[k:] + a[:k]))
        def wrap(s, w):
            return textwrap.wrap(s, w)
    """), ["assert caesar('abc', 1) == 'bcd'", "assert wrap('aaa bbb ccc', 7) == ['aaa bbb', 'ccc']",
           "assert caesar('xyz', 3).upper() == 'ABC'", "assert 'b' in caesar('abc', 1)"], {}),
    ("hash_struct_base64", src("""
        import hashlib, struct, base64, zlib
        def digest(s):
            return hashlib.sha256(s.encode()).hexdigest()[:8]
        def pack(a, b):
            return struct.pack('<ih', a, b)
        def b64(s):
            return base64.b64encode(s.encode()).decode()
        def crc(b):
            return zlib.crc32(b)
    """), ["assert digest('abc') == 'ba7816bf'", "assert pack(1, 2) == b'\\x01\\x00\\x00\\x00\\x02\\x00'",
           "assert b64('hi') == 'aGk='", "assert crc(b'abc') == 891568578"], {}),
    ("copy_random_seeded", src("""
        import copy, random
        def shuffled(xs, seed):
            r = random.Random(seed)
            ys = copy.deepcopy(xs)
            r.shuffle(ys)
            return sorted(ys) == sorted(xs)
    """), ["assert shuffled([[1], [2], [3]], 0)"], {}),
    ("main_guard_and_prints", src("""
        def greet(name):
            print('hello', name)
            return len(name)
        if __name__ == '__main__':
            print('loaded')
    """), ["assert greet('bob') == 3",
           "import io, contextlib\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    greet('al')\n"
           "assert buf.getvalue() == 'hello al\\n'"], {}),
    ("writes_a_file", src("""
        def save(name, lines):
            with open(name, 'w') as f:
                f.write('\\n'.join(lines))
            return len(lines)
        with open('at_load.txt', 'w') as f:
            f.write('ok')
    """), ["assert save('out.txt', ['a', 'b']) == 2\nassert open('out.txt').read() == 'a\\nb'",
           "assert open('at_load.txt').read() == 'ok'"], {}),
    ("reads_a_file_the_test_wrote", src("""
        def count_lines(path):
            with open(path) as f:
                return sum(1 for _ in f)
    """), ["with open('in.txt', 'w') as f:\n    f.write('1\\n2\\n3\\n')\nassert count_lines('in.txt') == 3"], {}),
    ("in_place_mutation", src("""
        def sort_in_place(xs):
            xs.sort()
        def fill(grid, v):
            for row in grid:
                for i in range(len(row)):
                    row[i] = v
        def bump(d):
            d['n'] = d.get('n', 0) + 1
            d.pop('gone', None)
        def rotate(nums, k):
            k %= len(nums)
            nums[:] = nums[-k:] + nums[:-k]
    """), ["xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
           "g = [[0, 0], [0]]\nrow = g[0]\nfill(g, 7)\nassert g == [[7, 7], [7]] and row == [7, 7]",
           "d = {'gone': 1}\nbump(d)\nbump(d)\nassert d == {'n': 2}",
           "nums = [1, 2, 3, 4, 5]\nassert rotate(nums, 2) is None\nassert nums == [4, 5, 1, 2, 3]"], {}),
    ("callables_passed_in", src("""
        def apply_all(fs, x):
            return [f(x) for f in fs]
        def sort_by(xs, key=None, reverse=False):
            return sorted(xs, key=key, reverse=reverse)
        def compose(f, g):
            return lambda x: f(g(x))
        def make(factory):
            return factory()
    """), ["assert apply_all([abs, str, lambda v: v * 2], -3) == [3, '-3', -6]",
           "assert sort_by(['bb', 'a', 'ccc'], key=len) == ['a', 'bb', 'ccc']",
           "assert sort_by([(1, 'b'), (0, 'a')], key=lambda t: t[1], reverse=True) == [(1, 'b'), (0, 'a')]",
           "assert compose(str.upper, str.strip)('  hi ') == 'HI'", "assert make(dict) == {} and make(list) == []",
           "calls = []\ndef log(x):\n    calls.append(x)\n    return x\n"
           "assert apply_all([log], 5) == [5] and calls == [5]"],
     {}),
    ("classes_used_by_tests", src("""
        class Solution:
            def twoSum(self, nums, target):
                seen = {}
                for i, x in enumerate(nums):
                    if target - x in seen:
                        return [seen[target - x], i]
                    seen[x] = i
        class Stack:
            def __init__(self):
                self.items = []
            def push(self, x):
                self.items.append(x)
            def pop(self):
                return self.items.pop()
            def __len__(self):
                return len(self.items)
            def __bool__(self):
                return bool(self.items)
    """), ["assert Solution().twoSum([2, 7, 11], 9) == [0, 1]",
           "s = Stack()\ns.push(1)\ns.push(2)\nassert len(s) == 2 and s.pop() == 2 and s and s.items == [1]",
           "s = Stack()\nassert not s\nassert isinstance(s, Stack)"], {}),
    ("objects_built_by_tests", src("""
        class Pair:
            def __init__(self, a, b):
                self.a = a
                self.b = b
        def max_chain_length(arr, n):
            arr = sorted(arr, key=lambda p: p.b)
            best, end = 0, float('-inf')
            for p in arr:
                if p.a > end:
                    best, end = best + 1, p.b
            return best
    """), ["assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 3"], {}),
    ("tree_from_setup", src("""
        class Node:
            def __init__(self, data):
                self.data = data
                self.left = None
                self.right = None
        def max_height(node):
            return 0 if node is None else 1 + max(max_height(node.left), max_height(node.right))
        def inorder(node):
            return inorder(node.left) + [node.data] + inorder(node.right) if node else []
    """), ["assert max_height(root) == 3", "assert inorder(root) == [4, 2, 5, 1, 3]",
           "assert root.left.data == 2 and root.right.left is None"],
     {"setup": "root = Node(1)\nroot.left = Node(2)\nroot.right = Node(3)\nroot.left.left = Node(4)\n"
               "root.left.right = Node(5)\n"}),
    ("linked_list", src("""
        class ListNode:
            def __init__(self, val=0, next=None):
                self.val = val
                self.next = next
        def build(xs):
            head = None
            for x in reversed(xs):
                head = ListNode(x, head)
            return head
        def reverse(head):
            prev = None
            while head:
                head.next, prev, head = prev, head, head.next
            return prev
    """), ["node = reverse(build([1, 2, 3]))\nvals = []\nwhile node:\n    vals.append(node.val)\n    node = node.next\n"
           "assert vals == [3, 2, 1]"], {}),
    ("expected_exceptions", src("""
        def parse_age(s):
            n = int(s)
            if n < 0:
                raise ValueError('negative age')
            return n
        class BadInput(KeyError):
            pass
        def lookup(d, k):
            if k not in d:
                raise BadInput(k)
            return d[k]
    """), ["try:\n    parse_age('-1')\nexcept ValueError as e:\n    assert str(e) == 'negative age'\nelse:\n"
           "    assert False", "try:\n    parse_age('x')\n    assert False\nexcept ValueError:\n    pass",
           "try:\n    lookup({}, 'k')\n    assert False\nexcept KeyError:\n    pass"], {}),
    ("global_state", src("""
        counter = 0
        def tick():
            global counter
            counter += 1
            return counter
        LIMIT = 3
        TABLE = {'a': 1}
    """), ["assert tick() == 1 and tick() == 2", "assert LIMIT == 3 and TABLE['a'] == 1"], {}),
    ("entry_point_named_like_a_builtin", src("""
        def sum(a, b):
            return a + b + 0
    """), ["assert sum(2, 3) == 5"], {"entry_points": ("sum",)}),
    ("program_imports_used_by_tests", src("""
        import math
        from math import sqrt
        def area(r):
            return math.pi * r * r
    """), ["assert math.isclose(area(1), 3.141592653589793)", "assert sqrt(area(1) / math.pi) == 1.0"], {}),
    ("humaneval_style_check", src("""
        def add(x: int, y: int):
            return x + y
    """), ["METADATA = {}\n\ndef check(candidate):\n    import random\n    for _ in range(100):\n"
           "        x, y = random.randint(0, 1000), random.randint(0, 1000)\n        assert candidate(x, y) == x + y\n"
           "\ncheck(add)\n"], {}),
    ("pathlib_tempfile_os", src("""
        import os, pathlib, tempfile
        def scratch():
            with tempfile.TemporaryDirectory() as d:
                p = pathlib.Path(d) / 'x.txt'
                p.write_text('hi')
                return p.read_text(), os.path.basename(d) != ''
        def env():
            return sorted(k for k in os.environ if k in ('HOME', 'PATH'))
    """), ["assert scratch() == ('hi', True)", "assert env() == ['HOME', 'PATH']"], {}),
    ("large_output", src("""
        def table(n):
            return [(i, i * i, str(i)) for i in range(n)]
        def text(n):
            return 'ab' * n
    """), ["assert len(table(200000)) == 200000 and table(200000)[-1] == (199999, 199999 ** 2, '199999')",
           "assert text(1_000_000).count('a') == 1_000_000"], {}),
    ("signals_and_timers_inside", src("""
        import signal, time
        def with_alarm():
            hits = []
            signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            time.sleep(0.05)
            return len(hits)
    """), ["assert with_alarm() == 1"], {}),
    ("numbers_types", src("""
        def mix():
            return [1, 2.5, True, None, 3 + 4j, b'x', 'y', (1,), {1}, frozenset({2}), {'k': [1]}]
        def big():
            return 2 ** 200 + 1
    """), ["assert mix() == [1, 2.5, True, None, 3 + 4j, b'x', 'y', (1,), {1}, frozenset({2}), {'k': [1]}]",
           "assert big() == 2 ** 200 + 1", "assert type(mix()[2]) is bool and type(mix()[0]) is int"], {}),
]

CASES += [
    ("returns_functions", src("""
        import functools
        def make_adder(n):
            return lambda x: x + n
        def memo(f):
            cache = {}
            @functools.wraps(f)
            def inner(x):
                if x not in cache:
                    cache[x] = f(x)
                return cache[x]
            return inner
        @memo
        def square(x):
            return x * x
    """), ["assert make_adder(2)(3) == 5", "assert memo(abs)(-4) == 4 and square(5) == 25",
           "assert list(map(make_adder(1), [1, 2])) == [2, 3]"], {}),
    ("lazy_iterators", src("""
        def evens(xs):
            return filter(lambda x: x % 2 == 0, xs)
        def pairs(a, b):
            return zip(a, b)
        def doubled(xs):
            return map(lambda x: 2 * x, xs)
        def rev(xs):
            return reversed(xs)
    """), ["assert list(evens(range(6))) == [0, 2, 4]", "assert dict(pairs('ab', [1, 2])) == {'a': 1, 'b': 2}",
           "assert sorted(doubled([3, 1])) == [2, 6]", "assert list(rev([1, 2, 3])) == [3, 2, 1]",
           "assert sum(doubled([1, 2])) == 6", "assert 4 in doubled([1, 2])"], {}),
]

assert len(CASES) >= 40


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout_s=20, memory_mb=1024)) as p:
        yield p


@pytest.fixture(scope="module")
def results(pool):
    jobs = [Job(prog, tests, **extra) for _, prog, tests, extra in CASES]
    return dict(zip([c[0] for c in CASES], pool.map(jobs)))


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_honest_program_passes(results, name):
    r = results[name]
    assert r.passed, (r.status, r.error, [t.error for t in r.tests if not t.passed], r.stderr_tail[-500:])
