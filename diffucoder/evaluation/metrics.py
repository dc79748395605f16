"""pass@k with the unbiased estimator of Chen et al. 2021 (the HumanEval paper), eq. (1):

    pass@k = E_tasks[ 1 - C(n - c, k) / C(n, k) ]

for n samples per task of which c are correct. Computed as a product so that large n does not overflow:
C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i).
"""

from __future__ import annotations

from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate for one task: probability that at least one of k samples drawn without
    replacement from the n generated (c correct) passes."""
    if not (0 <= c <= n) or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> float:
    """Average of ``pass_at_k`` over tasks."""
    if len(ns) != len(cs) or not ns:
        raise ValueError("need one (n, c) pair per task and at least one task")
    return sum(pass_at_k(n, c, k) for n, c in zip(ns, cs)) / len(ns)
