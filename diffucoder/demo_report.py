"""``report.md`` and its PNG plots for a demo run folder (see :mod:`diffucoder.demo`).

Data flows one way: the demo calls :func:`write_report` with its folder and the records of its finished stages;
this module knows nothing of the demo itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from diffucoder.analysis.plots import _plt


def _read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_losses(stages: dict[str, str], out: Path) -> Path | None:
    """Training loss and held-out masked-token CE per step, one panel per training stage."""
    series = {name: _read_metrics(path) for name, path in stages.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.8), squeeze=False)
    for ax, (name, rows) in zip(axes[0], series.items()):
        train = [(r["step"], r["masked_ce"]) for r in rows if "masked_ce" in r and "event" not in r]
        held = [(r["step"], r["eval/masked_ce"]) for r in rows if "eval/masked_ce" in r]
        uni = [r["eval/unigram_masked_ce"] for r in rows if "eval/unigram_masked_ce" in r]
        if train:
            ax.plot(*zip(*train), label="train masked-token CE", lw=1)
        if held:
            ax.plot(*zip(*held), "o-", label="held-out masked-token CE")
        if uni:
            ax.axhline(uni[-1], color="gray", ls="--", label="unigram baseline (held-out)")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("nats / masked token")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pass_by_tier(evals: dict[str, dict], out: Path) -> Path | None:
    """Grouped bars per tier: each model's greedy pass@1 and its largest sampled pass@k."""
    evals = {k: v for k, v in evals.items() if v and "by_tier" in v}
    if not evals:
        return None
    plt = _plt()
    tiers = [t for t in ("easy", "medium", "hard", "all") if any(t in e["by_tier"] for e in evals.values())]
    bars = [(m, "greedy", f"{m} greedy pass@1") for m in evals]
    bars += [(m, f"pass@{max(e['ks'])}", f"{m} pass@{max(e['ks'])} (T={e.get('temperature')})")
             for m, e in evals.items() if e.get("ks")]
    width = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, (m, key, label) in enumerate(bars):
        vals = [(evals[m]["by_tier"].get(t, {}).get(key) or 0.0) * 100 for t in tiers]
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(tiers))]
        ax.bar(xs, vals, width, label=label)
    ax.set_xticks(range(len(tiers)), tiers)
    ax.set_ylabel("% of held-out tasks")
    ax.set_ylim(0, 100)
    ax.set_title("held-out synthetic tasks: pass@k by tier")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_rewards(metrics_path: str | Path, out: Path) -> Path | None:
    rows = [r for r in _read_metrics(metrics_path) if "reward_mean" in r or "reward/mean" in r]
    if not rows:
        return None
    plt = _plt()
    key = "reward_mean" if "reward_mean" in rows[0] else "reward/mean"
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r.get("step", i) for i, r in enumerate(rows)], [r[key] for r in rows], "o-")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean reward (2.0 code + 0.5 format)")
    ax.set_title("coupled-GRPO rollouts")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for z = 1.96): sound at 0 and n successes, unlike the
    normal approximation."""
    import math

    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _greedy_cell(row: dict[str, Any]) -> str:
    x, n = row.get("greedy"), int(row.get("tasks") or 0)
    if x is None or x != x or not n:
        return _pct(x)
    lo, hi = wilson_interval(round(x * n), n)
    return f"{_pct(x)} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _rel(path: Any, d: Path) -> str:
    """A path inside the run folder, written relative to it (the report names no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(d.resolve()))
    except (ValueError, OSError, TypeError):
        return Path(str(path)).name


def write_report(run_dir: str | Path, stages: dict[str, dict[str, Any]], sft_loss_weighting: str = "elbo") -> Path:
    """Write ``run_dir/report.md`` (and ``run_dir/plots/*.png``) from the stage records ``stages`` (name ->
    the stage's ``stages/<name>.json`` contents, ``{}`` for a stage not run); ``sft_loss_weighting`` names the
    SFT objective ("elbo" or "none"). Returns the report's path."""
    d = Path(run_dir)
    s = {name: stages.get(name) or {} for name in ("tokenizer", "pretrain", "sft", "eval_sft", "analysis", "rl",
                                                    "eval_rl")}
    plots = d / "plots"
    plots.mkdir(exist_ok=True)
    lines = ["# diffucoder demo report", ""]
    lines += ["This folder holds the run: settings in `demo_settings.json`, one record per stage in `stages/`, the "
              "models, the evaluations' per-sample results and the plots below.", ""]
    capped = [n for n in ("pretrain", "sft") if s[n].get("stopped_by_time")]
    for n in capped:
        r = s[n]
        lines += [f"> **Warning: the stage time cap stopped {n} at step {r.get('steps')} of "
                  f"{r.get('planned_steps')}.** The model saw fewer examples than the recipe asks for (a slower or "
                  "busier machine), so the scores below are not the recipe's. Rerun with a larger "
                  "`--set stage_minutes_cap=...` to finish the steps.", ""]
    total = sum(float(st.get("stage_seconds") or 0) for st in s.values())
    if total:
        lines += ["Stage times: " + ", ".join(f"{n} {s[n].get('stage_seconds', 0):.0f} s" for n in s
                                               if s[n].get("stage_seconds") is not None and not s[n].get("skipped"))
                  + f"; {total / 60:.1f} min in all.", ""]

    # training
    lines += ["## Training", ""]
    start = s["sft"].get("start_from")
    if start is not None:
        recipe = s["sft"].get("recipe") or {}
        what = "the 5M checkpoint shipped with diffucoder" if start == "shipped" else f"`{Path(start).name}`"
        lines += [f"No training in this run: the evaluation, analysis and RL stages start from a trained checkpoint, "
                  f"{what} ({s['sft'].get('parameters', 0):,} parameters)."]
        if recipe.get("summary"):
            lines += [f"It was trained by: {recipe['summary']}"]
        lines += [""]
    else:
        lines += ["| stage | steps | examples | tokens | objective | final train loss | held-out masked CE | "
                  "unigram CE | time |", "|---|---|---|---|---|---|---|---|---|"]
        elbo = "ELBO (1/t-weighted CE)"
        objective = {"pretrain": elbo, "sft": elbo if sft_loss_weighting == "elbo" else "masked CE"}
        for name in ("pretrain", "sft"):
            r = s[name]
            if not r or r.get("skipped"):
                continue
            ev = r.get("eval") or {}
            uni = r.get("unigram_baseline")
            cells = (r.get("final_loss"), ev.get("masked_ce", ev.get("eval/masked_ce")), uni)
            loss, ce, uni = ("n/a" if x is None or x != x else f"{x:.3f}" for x in cells)  # None/NaN: not measured
            steps = f"{r.get('steps')}" + (f" of {r['planned_steps']} (cap)" if r.get("stopped_by_time") else "")
            ex = r.get("examples")
            lines.append(f"| {name} | {steps} | {'n/a' if not ex else f'{ex:,}'} | {r.get('tokens') or 0:,} | "
                         f"{objective[name]} | {loss} | {ce} | {uni} | {r.get('stage_seconds', 0):.0f}s |")
        lp = plot_losses({n: s[n].get("metrics", "") for n in ("pretrain", "sft") if s[n] and not s[n].get("skipped")},
                         plots / "losses.png")
        if lp:
            lines += ["", f"![losses](plots/{lp.name})", ""]
        lines += ["", "Masked-token CE is in nats per masked token (lower is better); the unigram CE is what a model "
                  "that ignores the context would score.", ""]
        if s["pretrain"].get("skipped"):
            lines += [f"No pretraining: {s['pretrain'].get('reason', 'the stage was not run')}.", ""]

    # evaluation
    evals = {"sft": s["eval_sft"], "rl": s["eval_rl"] if not s["eval_rl"].get("skipped") else {}}
    lines += ["## Held-out synthetic tasks", "",
              "Tasks whose concept/parameter combinations never appear in training; every sample run in the sandbox. "
              "Greedy pass@1: the share of tasks whose one arg-max completion passes all of the task's tests, with "
              "its 95% Wilson interval over tasks in brackets (with 100 tasks a tier, about +-10 points at 50%). "
              "pass@k: the unbiased estimate from the sampled completions at temperature T (Chen et al. 2021).",
              ""]
    for model, e in evals.items():
        if not e or "by_tier" not in e:
            continue
        ks = e.get("ks") or []
        where = f"`{_rel(e['results'], d)}`" + (f", sampled: `{_rel(e['sampled_results'], d)}`"
                                                 if e.get("sampled_results") else "")
        lines += [f"**{model} model** ({where})", "",
                  "| tier | tasks | greedy pass@1 [95% CI] | "
                  + " | ".join(f"pass@{k} (T={e.get('temperature')})" for k in ks) + " |", "|---|---|---|" + "---|" * len(ks)]
        for tier, row in e["by_tier"].items():
            lines.append(f"| {tier} | {row['tasks']} | {_greedy_cell(row)} | "
                         + " | ".join(_pct(row.get(f'pass@{k}')) for k in ks) + " |")
        lines.append("")
    if all(evals[m] and "by_tier" in evals[m] for m in ("sft", "rl")):
        deltas = [f"{tier} {100 * (evals['rl']['by_tier'][tier]['greedy'] - row['greedy']):+.1f}"
                  for tier, row in evals["sft"]["by_tier"].items() if tier in evals["rl"]["by_tier"]]
        lines += ["Greedy pass@1 after RL minus before, in points: " + ", ".join(deltas) + " (the same tasks; "
                  "a difference inside the intervals above is noise).", ""]
    pp = plot_pass_by_tier(evals, plots / "pass_at_k_by_tier.png")
    if pp:
        lines += [f"![pass@k by tier](plots/{pp.name})", ""]

    # analysis
    a = s["analysis"]
    if a and a.get("dir"):
        src = Path(a["dir"])
        lines += ["## Decoding order (paper section 4)", ""]
        data = json.loads((src / "analysis.json").read_text()) if (src / "analysis.json").is_file() else {}
        results = data.get("results", [])
        if results:
            lines += ["| temperature | local AR-ness@1 | global AR-ness@1 |", "|---|---|---|"]
            for r in results:
                ar = r.get("ar_ness", {})
                loc = (ar.get("local") or [None])[0]
                glo = (ar.get("global") or [None])[0]
                lines.append(f"| {r.get('temperature')} | {'n/a' if loc is None else f'{loc:.3f}'} | "
                             f"{'n/a' if glo is None else f'{glo:.3f}'} |")
            lines.append("")
        for png in ("ar_ness.png", "first_step_profile.png"):
            if (src / png).is_file():
                shutil.copy(src / png, plots / png)
                lines += [f"![{png}](plots/{png})", ""]

    # RL
    r = s["rl"]
    if r and not r.get("skipped"):
        lines += ["## Coupled-GRPO", "",
                  f"{r.get('steps')} steps from the SFT model on train-split prompts; the reward is 2.0 times the "
                  "fraction of the task's tests a completion passes (0 unless its format is right) plus 0.5 for the "
                  "answer format.", ""]
        rp = plot_rewards(r.get("metrics", ""), plots / "rl_rewards.png")
        if rp:
            lines += [f"![rewards](plots/{rp.name})", ""]
    elif r.get("skipped"):
        lines += ["## Coupled-GRPO", "", "Skipped (the RL stage is not available in this build).", ""]

    out = d / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
