"""PNG plots of a decoding-order analysis (matplotlib, the ``plot`` extra, imported only here).

- :func:`plot_ar_ness`: local and global AR-ness@k, one curve per temperature (paper Fig. 4 style);
- :func:`plot_first_step_profile`: first-step confidence by completion position (the entropy sink);
- :func:`plot_reveal_heatmap`: steps x positions, which step revealed which position;
- :func:`plot_pass_at_k`: pass@1 and pass@k against temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        from diffucoder.errors import MissingDependencyError

        raise MissingDependencyError("plots need matplotlib: pip install 'diffucoder[plot]' (or pass --no-plots)") \
            from e
    return plt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ar_ness(curves: Sequence[tuple[float, Any]], path: str | Path, title: str = "") -> Path:
    """``curves``: (temperature, ArNessCurves) pairs. Two panels: local and global AR-ness@k."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for temp, c in curves:
        axes[0].plot(c.ks, c.local, marker="o", label=f"T={temp:g}")
        axes[1].plot(c.ks, c.global_, marker="o", label=f"T={temp:g}")
    for ax, name in zip(axes, ("local AR-ness@k", "global AR-ness@k")):
        ax.set_xlabel("k")
        ax.set_title(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of steps")
    axes[1].legend()
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def plot_first_step_profile(profiles: Sequence[tuple[float, Sequence[float]]], path: str | Path,
                            ylabel: str = "confidence", title: str = "") -> Path:
    """``profiles``: (temperature, per-position confidence) pairs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for temp, prof in profiles:
        ax.plot(range(len(prof)), list(prof), label=f"T={temp:g}")
    ax.set_xlabel("completion position")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "first-step confidence by position (entropy sink)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def plot_reveal_heatmap(heatmap: Any, path: str | Path, title: str = "") -> Path:
    """``heatmap``: (steps, T) array, fraction of samples revealing position j at step s."""
    plt = _plt()
    import numpy as np

    hm = np.asarray(heatmap, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(hm, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("completion position")
    ax.set_ylabel("step")
    ax.set_title(title or "which step revealed which position")
    fig.colorbar(im, ax=ax, label="fraction of samples")
    return _save(plt, fig, path)


def plot_pass_at_k(temperatures: Sequence[float], scores: dict[str, Sequence[float]], path: str | Path,
                   title: str = "") -> Path:
    """``scores``: {"pass@1": [...], "pass@10": [...]} aligned with ``temperatures``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, vals in scores.items():
        ax.plot(list(temperatures), list(vals), marker="o", label=name)
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "pass@k against temperature")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)
