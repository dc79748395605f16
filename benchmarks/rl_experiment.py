"""Coupled-GRPO estimators compared on prompts at the model's edge: paired reward gains, held-out pass@1.

Three subcommands, run in this order (docs/rl-experiment/README.md has the exact commands and the results)::

    python benchmarks/rl_experiment.py pool --model SFT --out POOL           # score prompts once, keep the edge
    python benchmarks/rl_experiment.py run --model SFT --pool POOL --out RUNS --workers 2   # resumable runner
    python benchmarks/rl_experiment.py analyse --runs RUNS --pool POOL --docs docs/rl-experiment

``pool``: every train-split prompt of ``--tiers`` (``diffucoder.tasks``) is decoded ``--samples`` times at the
rollout temperature with the rollout decoding; prompts solved (code reward 1.0: every test passes) between
``--keep-min`` and ``--keep-max`` times are kept. The held-out pool is built the same way from the test split
(combinations no training task asks for). ``POOL/train.jsonl`` and ``POOL/heldout.jsonl`` hold the kept rows with
their scoring counts; ``POOL/pool.json`` the settings and how many prompts were scored and kept per tier.

``run``: the plan of runs (:func:`build_plan`), each one GRPO run from the start model on the training pool:
G completions per prompt, ``--prompts-per-batch`` prompts per rollout batch, mu = 2 updates per batch, a constant
learning rate. Every run of a seed sees the same prompts in the same order and the same rollout generator seeds
(the trainer derives both from the seed), so runs are paired batch by batch. The plan:

- an lr sweep of ``coupled`` (seed 0), then the lr picked by :func:`pick_lr` (the largest that learns without
  collapsing) for everything else;
- the main comparison at beta = 0: coupled, coupled_normalized, decoupled, full_mask, d1, ``--seeds`` each,
  with 3 forward passes per completion for the random estimators (:data:`ESTIMATOR_SETTINGS`);
- an arm with beta = 0.01 and the per-token k3 clamped (``kl_clamp``), coupled;
- controls: lr = 0 for every seed (identical rollouts to the start model's: the reward's and the evaluation's
  noise at no learning) and the toy learnable reward (fraction of vowels in the answer, coupled vs its own
  lr = 0 control: the pipeline learns what it can).

After training, held-out pass@1 is measured on the held-out pool, ``--eval-samples`` samples per task at the
rollout temperature, with an evaluation seed shared by the start model ("before") and every run of that seed
("after"), so each task's difference is paired. Runs are resumable: a finished run (``RUNS/NAME/result.json``)
is skipped, a killed one resumes from its last checkpoint (the trainer's exact resume), a run claimed by a live
worker is left to it. ``--workers 2`` runs two worker processes (one thread each).

A shorter plan: ``--lr X`` (one learning rate, no sweep), ``--estimators a,b`` (a subset), ``--no-kl-arm``,
``--no-toy``; a later invocation on the same folder may grow the plan (:data:`PLAN_ONLY`), never change a run's
settings. ``pool --train-from POOL`` copies another pool's training split and scores only the held-out split.

``analyse``: ``summary.json``, the PNG plots and the results tables of the README from whatever runs have
finished (it lists the missing ones); see :func:`analyse` for the definition of each number.

``--tiny`` (any subcommand) runs on a tiny random model, with tiny settings: a pipeline check whose numbers mean
nothing (``tests/test_rl_experiment.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ESTIMATORS = ("coupled", "coupled_normalized", "decoupled", "full_mask", "d1")
ESTIMATOR_SETTINGS: dict[str, dict[str, Any]] = {
    "coupled": {"estimator": "coupled", "num_mask_pairs": 1, "full_mask_pass": True},
    "decoupled": {"estimator": "decoupled", "num_mask_pairs": 1, "full_mask_pass": True},
    "full_mask": {"estimator": "full_mask"},
    "d1": {"estimator": "d1", "estimator_passes": 3, "prompt_mask_prob": 0.15},
    "coupled_normalized": {"estimator": "coupled_normalized", "num_mask_pairs": 1, "full_mask_pass": True},
}
"""Equal forward passes per completion where the estimator is random: coupled = one complementary pair plus the
full-mask pass (3), decoupled = two independent masks plus the full-mask pass (3), d1 = 3 prompt masks averaged,
coupled_normalized = coupled's masks with weight 1 (3). full_mask is deterministic: 1 pass (more would repeat it)."""


# ------------------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Everything every run of one experiment shares (written to ``RUNS/experiment.json``; a runner invoked
    with different values refuses to mix them into the same folder)."""

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 50
    max_completion_length: int = 64
    diffusion_steps: int = 32
    block_length: int | None = 16
    threshold: float | None = 0.9
    use_cache: str | None = "dual"
    early_stop: bool = True
    chat_template: bool = True
    num_generations: int = 8
    prompts_per_batch: int = 4
    num_iterations: int = 2
    steps: int = 240
    epsilon: float = 0.5
    max_grad_norm: float = 0.2
    eval_samples: int = 4
    eval_seed: int = 1000
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    seeds: tuple[int, ...] = (0, 1, 2)
    kl_beta: float = 0.01
    kl_clamp: float = 10.0
    toy_steps: int = 120
    save_steps: int = 20
    estimators: tuple[str, ...] = ESTIMATORS
    """The main comparison's estimators (a subset of :data:`ESTIMATORS` for a shorter experiment)."""
    fixed_lr: float | None = None
    """A learning rate for every run instead of the sweep (None: sweep, then :func:`pick_lr`)."""
    kl_arm: bool = True
    """Run the beta = ``kl_beta`` clamped-KL arm."""
    toy_arm: bool = True
    """Run the toy-reward pair (coupled and its lr = 0 control)."""

    def decoding(self) -> dict[str, Any]:
        """``generate_rollouts`` keyword options (rollouts, pool scoring and evaluation decode alike)."""
        return {"top_k": self.top_k, "block_length": self.block_length, "threshold": self.threshold,
                "use_cache": self.use_cache, "early_stop": self.early_stop}


TINY = dict(max_completion_length=8, diffusion_steps=4, block_length=4, threshold=None, use_cache="prefix",
            num_generations=2, prompts_per_batch=2, steps=4, eval_samples=2, sweep_lrs=(1e-3, 1e-2), seeds=(0,),
            toy_steps=2, save_steps=2, chat_template=False)


@dataclass
class RunSpec:
    """One GRPO run of the plan."""

    name: str
    kind: str  # "sweep" | "main" | "kl" | "control" | "toy" | "toy_control"
    estimator: str
    seed: int
    lr: float | str  # a number, or "chosen" (filled by pick_lr once the sweep has finished)
    beta: float = 0.0
    kl_clamp: float | None = None
    toy: bool = False
    steps: int = 0

    def needs(self) -> list[str]:
        """Runs that must finish before this one can start (the lr choice needs the sweep and control 0)."""
        return ["lr_choice"] if self.lr == "chosen" else []


def run_name(est: str, lr: float | str, seed: int, beta: float = 0.0, toy: bool = False) -> str:
    lr_s = "chosen" if isinstance(lr, str) else f"{lr:.0e}".replace("e-0", "e-")
    return f"{'toy-' if toy else ''}{est}-lr{lr_s}{f'-beta{beta:g}' if beta else ''}-s{seed}"


def build_plan(s: Settings) -> list[RunSpec]:
    """The runs in the order they start: sweep and control 0 first (the lr choice needs them), then seed by
    seed the main estimators (so a partial set stays balanced), the toy pair after seed 0, the KL arm last."""
    plan: list[RunSpec] = []
    for lr in (s.sweep_lrs if s.fixed_lr is None else ()):
        plan.append(RunSpec(run_name("coupled", lr, s.seeds[0]), "sweep", "coupled", s.seeds[0], lr, steps=s.steps))
    for i, seed in enumerate(s.seeds):
        plan.append(RunSpec(f"control-lr0-s{seed}", "control", "full_mask", seed, 0.0, steps=s.steps))
        for est in s.estimators:
            plan.append(RunSpec(run_name(est, "chosen", seed), "main", est, seed, "chosen", steps=s.steps))
        if i == 0 and s.toy_arm:
            plan.append(RunSpec(f"toy-control-lr0-s{seed}", "toy_control", "full_mask", seed, 0.0, toy=True,
                                steps=s.toy_steps))
            plan.append(RunSpec(run_name("coupled", "chosen", seed, toy=True), "toy", "coupled", seed, "chosen",
                                toy=True, steps=s.toy_steps))
    for seed in (s.seeds if s.kl_arm else ()):
        plan.append(RunSpec(run_name("coupled", "chosen", seed, beta=s.kl_beta), "kl", "coupled", seed, "chosen",
                            beta=s.kl_beta, kl_clamp=s.kl_clamp, steps=s.steps))
    # controls first within their seed: move control 0 right after the sweep (it gates the lr choice)
    return plan


# ------------------------------------------------------------------------------------------------------------
# small utilities
# ------------------------------------------------------------------------------------------------------------
def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def load_start(model: str | None, tiny: bool) -> tuple[Any, Any, str]:
    """The start model and tokenizer: an SFT folder (``tokenizer.json`` beside it or ``--tokenizer``), or a tiny
    random model for the pipeline check."""
    import torch

    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tokenizer import load_tokenizer, train_tokenizer

    if tiny:
        from diffucoder.tasks import format_answer, generate_tasks

        tok = train_tokenizer([format_answer(t) + t.question for t in generate_tasks(100, "train", seed=0)],
                              vocab_size=400)
        cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id)
        m = DreamModel(cfg, init_weights=False)
        m.init_weights(generator=torch.Generator().manual_seed(0))
        return m, tok, "tiny random model (--tiny: pipeline check only)"
    if not model:
        raise SystemExit("--model: required (an SFT checkpoint folder with tokenizer.json), or pass --tiny")
    path = Path(model)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model: {path} is not a checkpoint folder (no config.json)")
    if not (path / "tokenizer.json").is_file():
        raise SystemExit(f"--model: {path} has no tokenizer.json (copy the run's tokenizer beside the weights)")
    m = DreamModel.from_pretrained(path, torch_dtype=torch.float32)
    return m, load_tokenizer(path), f"{path} ({m.num_parameters() / 1e6:.2f}M parameters)"


def vowel_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Toy reward: the fraction of the answer's characters that are lower-case vowels (learnable by any model)."""
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def solve_counts(model: Any, tok: Any, rows: Sequence[dict[str, Any]], s: Settings, samples: int, seed: int,
                 pool: Any, desc: str, chunk_prompts: int = 8) -> list[dict[str, Any]]:
    """Decode ``samples`` completions per row at the rollout settings (one generator seeded ``seed``, prompts in
    chunks of ``chunk_prompts``) and count the solved ones (code reward 1.0) and the mean format score."""
    import torch
    from tqdm.auto import tqdm

    from diffucoder.rewards.code import code_format_reward, code_reward
    from diffucoder.rl.rollout import generate_rollouts

    g = torch.Generator().manual_seed(seed)
    out: list[dict[str, Any]] = []
    for i in tqdm(range(0, len(rows), chunk_prompts), desc=desc, file=sys.stderr, dynamic_ncols=True):
        chunk = list(rows[i:i + chunk_prompts])
        ro = generate_rollouts(model, tok, chunk, samples, s.max_completion_length, s.diffusion_steps,
                               s.temperature, s.top_p, "entropy", g, chat_template=s.chat_template, **s.decoding())
        code = None
        for attempt in range(3):  # a transient sandbox failure is retried, then the chunk is scored unsolved
            try:
                code = code_reward(ro.texts, test_cases=[r["test_cases"] for r in ro.rows], pool=pool)
                break
            except Exception as e:  # noqa: BLE001 - reported, never fatal
                print(f"warning: scoring failed (attempt {attempt + 1}): {type(e).__name__}: {e}", file=sys.stderr)
        errors = code is None
        code = code or [0.0] * len(ro.texts)
        fmt = code_format_reward(ro.texts)
        for j, row in enumerate(chunk):
            sl = slice(j * samples, (j + 1) * samples)
            out.append({"task_id": row["task_id"], "tier": row.get("tier"), "samples": samples,
                        "solved": sum(1 for c in code[sl] if c == 1.0), "format": sum(fmt[sl]) / samples,
                        "scoring_error": errors})
    return out


# ------------------------------------------------------------------------------------------------------------
# pool
# ------------------------------------------------------------------------------------------------------------
def cmd_pool(args: argparse.Namespace, s: Settings) -> int:
    """Score train/test prompts once and keep those at the model's edge (module docstring)."""
    import torch

    from diffucoder.execution import SandboxPool
    from diffucoder.tasks import check_tiers, generate_tasks, to_rl_record

    try:
        tiers = check_tiers([t.strip() for t in args.tiers.split(",") if t.strip()])
    except ValueError as e:
        raise SystemExit(f"--tiers: {e}") from None
    if not 0 <= args.keep_min <= args.keep_max <= args.samples:
        raise SystemExit(f"--keep-min/--keep-max: need 0 <= {args.keep_min} <= {args.keep_max} <= --samples "
                         f"({args.samples})")
    out = Path(args.out)
    reuse: dict[str, Any] | None = None
    if args.train_from:
        src = Path(args.train_from)
        if not (src / "pool.json").is_file() or not (src / "train.jsonl").is_file():
            raise SystemExit(f"--train-from: {src} has no pool.json/train.jsonl (not a pool folder)")
        reuse = json.loads((src / "pool.json").read_text())
        keys = ("temperature", "top_p", "top_k", "max_completion_length", "diffusion_steps", "block_length",
                "threshold", "use_cache", "early_stop", "chat_template")
        if any(reuse["settings"].get(k) != getattr(s, k) for k in keys) or reuse.get("samples") != args.samples:
            raise SystemExit(f"--train-from: {src} was scored with other decoding settings or --samples")
    if (out / "pool.json").is_file() and not args.force:
        raise SystemExit(f"--out: {out} already holds a pool (pool.json); pass --force to rebuild it")
    torch.set_num_threads(1)
    model, tok, desc = load_start(args.model, args.tiny)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info: dict[str, Any] = {"start_model": desc, "settings": dataclasses.asdict(s), "samples": args.samples,
                            "keep": [args.keep_min, args.keep_max], "tiers": list(tiers), "splits": {}}
    with SandboxPool(workers=1) as pool:
        for split, n, name, seed in (("train", args.train_tasks, "train", args.task_seed),
                                     ("test", args.test_tasks, "heldout", args.task_seed + 1)):
            if split == "train" and reuse is not None:  # the training pool of another pool folder, as it is
                kept = read_jsonl(Path(args.train_from) / "train.jsonl")
                (out / ".train.jsonl.tmp").write_text("".join(json.dumps(r) + "\n" for r in kept))
                os.replace(out / ".train.jsonl.tmp", out / "train.jsonl")
                info["splits"]["train"] = {**reuse["splits"]["train"], "copied_from": str(args.train_from),
                                           "tiers": reuse.get("tiers")}
                print(f"train: {len(kept)} rows copied from {args.train_from}", flush=True)
                continue
            tasks = generate_tasks(n, split, seed=seed, tiers=tiers)
            rows = [to_rl_record(t) for t in tasks]
            seen: set[str] = set()
            uniq = []
            for r in rows:  # identical prompts (same concept, names and phrasing) count once
                if r["prompt"] not in seen:
                    seen.add(r["prompt"])
                    uniq.append(r)
            stats = solve_counts(model, tok, uniq, s, args.samples, args.score_seed + (split == "test"), pool,
                                 f"score {split}")
            kept = []
            per_tier: dict[str, dict[str, Any]] = {}
            for r, st in zip(uniq, stats):
                t = per_tier.setdefault(st["tier"], {"scored": 0, "kept": 0, "solved_hist": [0] * (args.samples + 1)})
                t["scored"] += 1
                t["solved_hist"][st["solved"]] += 1
                if args.keep_min <= st["solved"] <= args.keep_max and not st["scoring_error"]:
                    t["kept"] += 1
                    kept.append({**r, "pool_solved": st["solved"], "pool_samples": args.samples,
                                 "pool_format": st["format"]})
            tmp = out / f".{name}.jsonl.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, out / f"{name}.jsonl")
            info["splits"][name] = {"split": split, "generated": n, "unique_prompts": len(uniq), "kept": len(kept),
                                    "per_tier": per_tier, "scoring_errors": sum(st["scoring_error"] for st in stats)}
            print(f"{name}: {len(uniq)} prompts scored, {len(kept)} kept "
                  + ", ".join(f"{k}: {v['kept']}/{v['scored']}" for k, v in per_tier.items()), flush=True)
    info["seconds"] = time.time() - t0
    atomic_write_json(out / "pool.json", info)
    if not info["splits"]["train"]["kept"] or not info["splits"]["heldout"]["kept"]:
        print("warning: a pool is empty; score more prompts or widen --keep-min/--keep-max", file=sys.stderr)
    return 0


def load_pool(pool_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    for f in ("pool.json", "train.jsonl", "heldout.jsonl"):
        if not (pool_dir / f).is_file():
            raise SystemExit(f"--pool: {pool_dir / f} is missing (build it with the pool subcommand)")
    train, held = read_jsonl(pool_dir / "train.jsonl"), read_jsonl(pool_dir / "heldout.jsonl")
    if not train or not held:
        raise SystemExit(f"--pool: {pool_dir} has an empty pool (train {len(train)}, held-out {len(held)} rows)")
    return train, held, json.loads((pool_dir / "pool.json").read_text())


# ------------------------------------------------------------------------------------------------------------
# runner
# ------------------------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run_dir: Path) -> bool:
    """Take a run for this process: an atomic ``mkdir`` of ``claim``; a claim whose process has died is taken
    over (its checkpoints are resumed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    c = run_dir / "claim"
    for _ in range(2):
        try:
            c.mkdir()
            (c / "pid").write_text(str(os.getpid()))
            return True
        except FileExistsError:
            try:
                pid = int((c / "pid").read_text())
            except (OSError, ValueError):
                pid = -1
                if time.time() - c.stat().st_mtime < 30:  # being written right now
                    return False
            if pid == os.getpid():
                return True
            if pid > 0 and _alive(pid):
                return False
            shutil.rmtree(c, ignore_errors=True)
    return False


def release(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "claim", ignore_errors=True)
    try:
        run_dir.rmdir()  # only when empty: a claimed run that turned out to be finished leaves nothing behind
    except OSError:
        pass


def start_eval(runs: Path, seed: int, model: Any, tok: Any, held: list[dict[str, Any]], s: Settings,
               pool: Any) -> list[dict[str, Any]]:
    """Held-out solve counts of the start model under seed ``seed``'s evaluation stream (cached in RUNS)."""
    f = runs / f"before-s{seed}.json"
    if f.is_file():
        return json.loads(f.read_text())["tasks"]
    t0 = time.time()
    tasks = solve_counts(model, tok, held, s, s.eval_samples, s.eval_seed + seed, pool, f"before s{seed}")
    atomic_write_json(f, {"seed": seed, "eval_seed": s.eval_seed + seed, "seconds": time.time() - t0,
                          "tasks": tasks})
    return tasks


def _phase_stats(hist: list[dict[str, Any]], key: str, frac: tuple[float, float]) -> float:
    first = [h for h in hist if h["iteration"] == 0]
    a, b = int(len(first) * frac[0]), max(int(len(first) * frac[0]) + 1, int(len(first) * frac[1]))
    vals = [h.get(key) for h in first[a:b] if h.get(key) is not None]
    return sum(vals) / len(vals) if vals else math.nan


def pick_lr(runs: Path, s: Settings) -> dict[str, Any] | None:
    """The learning rate of every later run, from the finished sweep (None while a sweep run or control 0 is
    unfinished). Per sweep lr, against the lr = 0 control of the same seed on the same batches:

    - ``gain_2nd_half``: mean reward difference over the second half of the rollout batches;
    - collapsed: the last quarter's mean reward difference below -0.15 (of the 2.5 reward range), or its format
      reward 0.1 below the control's, or more than 10% of its updates skipped as non-finite.

    Chosen: the largest lr that has not collapsed and whose ``gain_2nd_half`` > 0; if none learns, the largest that
    has not collapsed; if all collapsed, the smallest. Written to ``RUNS/lr_choice.json`` with the numbers."""
    f = runs / "lr_choice.json"
    if f.is_file():
        return json.loads(f.read_text())
    if s.fixed_lr is not None:
        choice = {"lr": s.fixed_lr, "rule": "fixed by --lr (no sweep)", "candidates": []}
        atomic_write_json(f, choice)
        return choice
    ctrl_f = runs / f"control-lr0-s{s.seeds[0]}" / "result.json"
    if not ctrl_f.is_file():
        return None
    ctrl = json.loads(ctrl_f.read_text())["history"]
    cands = []
    for lr in s.sweep_lrs:
        rf = runs / run_name("coupled", lr, s.seeds[0]) / "result.json"
        if not rf.is_file():
            return None
        r = json.loads(rf.read_text())
        h = r["history"]
        d = {k: _phase_stats(h, "reward_mean", k) - _phase_stats(ctrl, "reward_mean", k)
             for k in ((0.5, 1.0), (0.75, 1.0))}
        fmt = (_phase_stats(h, "reward/code_format", (0.75, 1.0))
               - _phase_stats(ctrl, "reward/code_format", (0.75, 1.0)))
        skipped = sum(bool(x.get("skipped_update")) for x in h) / max(1, len(h))
        collapsed = d[(0.75, 1.0)] < -0.15 or fmt < -0.1 or skipped > 0.1
        cands.append({"lr": lr, "gain_2nd_half": d[(0.5, 1.0)], "gain_last_quarter": d[(0.75, 1.0)],
                      "format_diff_last_quarter": fmt, "skipped_frac": skipped, "collapsed": collapsed})
    ok = [c for c in cands if not c["collapsed"]]
    learning = [c for c in ok if c["gain_2nd_half"] > 0]
    if learning:
        chosen, why = max(learning, key=lambda c: c["lr"]), "largest lr that learns without collapsing"
    elif ok:
        chosen, why = max(ok, key=lambda c: c["lr"]), "no lr learned; largest that did not collapse"
    else:
        chosen, why = min(cands, key=lambda c: c["lr"]), "every lr collapsed; the smallest"
    choice = {"lr": chosen["lr"], "rule": why, "candidates": cands}
    atomic_write_json(f, choice)
    print(f"lr choice: {chosen['lr']:g} ({why})", flush=True)
    return choice


def execute(spec: RunSpec, runs: Path, s: Settings, start: Any, tok: Any, train: list[dict[str, Any]],
            held: list[dict[str, Any]], lr: float, pool: Any) -> dict[str, Any]:
    """Train one run (resuming its checkpoints), evaluate it on the held-out pool, write its result.json."""
    import copy

    from diffucoder.rl import GRPOConfig, train_grpo

    d = runs / spec.name
    resume = any(p.is_dir() for p in d.glob("checkpoint-*"))
    cfg = GRPOConfig(
        output_dir=str(d), seed=spec.seed, num_generations=s.num_generations,
        per_device_train_batch_size=s.num_generations * s.prompts_per_batch, max_steps=spec.steps,
        num_iterations=s.num_iterations, beta=spec.beta, kl_clamp=spec.kl_clamp, epsilon=s.epsilon,
        learning_rate=lr, lr_scheduler_type="constant", warmup_ratio=0.0, max_grad_norm=s.max_grad_norm,
        temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_completion_length=s.max_completion_length,
        diffusion_steps=s.diffusion_steps, generation_block_length=s.block_length,
        generation_threshold=s.threshold, generation_use_cache=s.use_cache, generation_early_stop=s.early_stop,
        sync_ref_model=False, save_steps=s.save_steps, save_total_limit=1, save_final_model=False,
        reward_workers=1, disable_tqdm=False, chat_template=s.chat_template,
        resume_from_checkpoint="latest" if resume else None, overwrite_output_dir=not resume,
        **({"reward_funcs": ["vowels"], "reward_weights": [1.0]} if spec.toy else {}),
        **ESTIMATOR_SETTINGS[spec.estimator],
    )
    t0 = time.time()
    res = train_grpo(cfg, model=copy.deepcopy(start), tokenizer=tok, rows=train,
                     reward_funcs=[vowel_reward] if spec.toy else None)
    train_s = time.time() - t0
    if res.stopped_early:
        print(f"warning: {spec.name} stopped early: {res.stopped_early}", file=sys.stderr)
    after, after_source = None, None
    before_f = runs / f"before-s{spec.seed}.json"
    if spec.kind == "control" and spec.seed != s.seeds[0] and before_f.is_file():
        # lr = 0 leaves the weights unchanged, so the paired evaluation is the start model's; seed 0's control
        # re-evaluates it (the check of the pairing), later seeds' reuse it (saves one evaluation each)
        after, after_source = json.loads(before_f.read_text())["tasks"], "before (lr = 0; checked on seed 0)"
    elif not spec.toy:
        after_source = "evaluated"
        after = solve_counts(res.model, tok, held, s, s.eval_samples, s.eval_seed + spec.seed, pool,
                             f"after {spec.name}")
    result = {"spec": dataclasses.asdict(spec), "lr": lr, "config": cfg.to_dict(), "passes":
              cfg.estimator_config().passes, "train_seconds": train_s, "resumed": resume,
              "eval_seconds": time.time() - t0 - train_s, "counters": res.counters,
              "stopped_early": res.stopped_early, "heldout_after": after, "heldout_after_source": after_source,
              "history": [{k: v for k, v in h.items() if k not in ("counters", "reward_errors")}
                          for h in res.history]}
    atomic_write_json(d / "result.json", result)
    for cp in d.glob("checkpoint-*"):  # the result holds what the analysis needs; checkpoints are ~60 MB each
        shutil.rmtree(cp, ignore_errors=True)
    return result


def finished(runs: Path, spec: RunSpec, s: Settings) -> bool:
    """A run is finished when its result.json exists; the main coupled run of the sweep's seed is the sweep run at
    the chosen lr (the same config), so it is never run twice."""
    if (runs / spec.name / "result.json").is_file():
        return True
    if spec.kind == "main" and spec.estimator == "coupled" and spec.seed == s.seeds[0] and s.fixed_lr is None:
        f = runs / "lr_choice.json"
        if f.is_file():
            lr = json.loads(f.read_text())["lr"]
            return (runs / run_name("coupled", lr, spec.seed) / "result.json").is_file()
    return False


PLAN_ONLY = ("estimators", "kl_arm", "toy_arm")
"""Settings that choose which runs are in the plan, not how any run is made: a runner may extend (or shrink) the
plan of an existing folder with them (finished runs stay valid)."""


def check_settings(runs: Path, s: Settings, pool_info: dict[str, Any]) -> None:
    """Refuse to mix runs made with other settings into one folder (:data:`PLAN_ONLY` may change)."""
    f = runs / "experiment.json"
    mine = {"settings": dataclasses.asdict(s), "pool": pool_info.get("settings"),
            "start_model": pool_info.get("start_model")}
    if f.is_file():
        old = json.loads(f.read_text())
        old_s = old.get("settings", {})
        new_s = json.loads(json.dumps(mine["settings"]))
        diff = sorted(k for k in set(old_s) | set(new_s) if old_s.get(k) != new_s.get(k) and k not in PLAN_ONLY)
        if diff:
            raise SystemExit(f"--out: {runs} holds runs made with other settings (changed: {', '.join(diff)}); "
                             f"use another --out or the same settings")
        if any(old_s.get(k) != new_s.get(k) for k in PLAN_ONLY):  # a larger (or smaller) plan: record it
            atomic_write_json(f, {**old, "settings": new_s,
                                  "plan_history": old.get("plan_history", []) + [{k: old_s.get(k) for k in PLAN_ONLY}]})
        return
    runs.mkdir(parents=True, exist_ok=True)
    atomic_write_json(f, mine)


def worker(args: argparse.Namespace, s: Settings) -> int:
    """Take runs of the plan in order until none is left (see the module docstring)."""
    import torch

    from diffucoder.execution import SandboxPool

    torch.set_num_threads(1)
    runs = Path(args.out)
    train, held, pool_info = load_pool(Path(args.pool))
    start, tok, desc = load_start(args.model, args.tiny)
    plan = build_plan(s)
    only = set(args.only.split(",")) if args.only else None
    with SandboxPool(workers=1) as pool:
        for seed in s.seeds:  # the start model's evaluations, once per seed (the first worker to get there)
            if claim(runs / f"before-s{seed}.lock"):
                start_eval(runs, seed, start, tok, held, s, pool)
                release(runs / f"before-s{seed}.lock")
        while True:
            pending = [p for p in plan if not finished(runs, p, s) and (only is None or p.name in only)]
            if not pending:
                break
            started = False
            for spec in pending:
                lr: float
                if spec.lr == "chosen":
                    choice = pick_lr(runs, s)
                    if choice is None:
                        continue
                    lr = float(choice["lr"])
                else:
                    lr = float(spec.lr)
                if not claim(runs / spec.name):
                    continue
                try:
                    if finished(runs, spec, s):
                        continue
                    print(f"[worker {os.getpid()}] start {spec.name} (lr {lr:g}, {spec.steps} steps)", flush=True)
                    r = execute(spec, runs, s, start, tok, train, held, lr, pool)
                    print(f"[worker {os.getpid()}] done {spec.name}: {r['train_seconds']:.0f} s train, "
                          f"{r['eval_seconds']:.0f} s eval", flush=True)
                finally:
                    release(runs / spec.name)
                started = True
                break
            if not started:  # everything left is claimed by another worker or waits for the lr choice
                if not any((runs / p.name / "claim").is_dir() for p in pending) and pick_lr(runs, s) is None:
                    raise SystemExit("the lr choice cannot be made: a sweep run or control 0 is not in --only")
                time.sleep(args.poll)
    return 0


def cmd_run(args: argparse.Namespace, s: Settings) -> int:
    import subprocess

    runs = Path(args.out)
    _, _, pool_info = load_pool(Path(args.pool))
    check_settings(runs, s, pool_info)
    if args.workers <= 1:
        return worker(args, s)
    argv = list(args.argv)
    procs = []
    for i in range(args.workers):
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--workers", "1"]
        log = open(runs / f"worker{i}.log", "a")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                                                                                     "OMP_NUM_THREADS": "1"}))
        print(f"worker {i}: pid {procs[-1].pid}, log {runs / f'worker{i}.log'}", flush=True)
        time.sleep(5)  # let the first one take the first run
    rcs = [p.wait() for p in procs]
    return max(rcs)


# ------------------------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------------------------
def _rewards_by_batch(r: dict[str, Any], key: str = "reward_mean") -> list[float]:
    return [h[key] for h in r["history"] if h["iteration"] == 0 and h.get(key) is not None]


def block_bootstrap(diffs: dict[int, list[float]], draws: int = 2000, block: int = 10, seed: int = 0
                    ) -> tuple[float, list[float]]:
    """Mean of per-(seed, batch) differences and a 95% percentile interval: seeds resampled with replacement,
    then within each drawn seed a moving-block bootstrap over rollout batches (blocks of ``block`` consecutive
    batches, so the autocorrelation of a policy trajectory is kept); the statistic is the mean over seeds of the
    per-seed mean. The block is ``min(block, n // 3)`` batches for a run of n batches (at least 1), so a short run
    still has several blocks to resample."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keys = sorted(diffs)
    arrs = [np.asarray(diffs[k], dtype=float) for k in keys]
    point = float(np.mean([a.mean() for a in arrs]))
    stats = np.empty(draws)
    for i in range(draws):
        picks = rng.integers(0, len(arrs), len(arrs))
        vals = []
        for p in picks:
            a = arrs[p]
            n = len(a)
            b = max(1, min(block, n // 3))
            starts = rng.integers(0, n - b + 1, int(math.ceil(n / b)))
            idx = (starts[:, None] + np.arange(b)[None]).reshape(-1)[:n]
            vals.append(a[idx].mean())
        stats[i] = np.mean(vals)
    return point, [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def task_bootstrap(per_seed: dict[int, list[float]], draws: int = 2000, seed: int = 0
                   ) -> tuple[float, list[float]]:
    """Mean of per-task differences (averaged over seeds) and a 95% percentile interval: tasks resampled with
    replacement, and seeds resampled with replacement (a two-way bootstrap)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    M = np.asarray([per_seed[k] for k in sorted(per_seed)], dtype=float)  # (seeds, tasks)
    point = float(M.mean())
    S, T = M.shape
    stats = np.empty(draws)
    for i in range(draws):
        stats[i] = M[rng.integers(0, S, S)][:, rng.integers(0, T, T)].mean()
    return point, [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def _median(xs: list[float]) -> float:
    xs = sorted(x for x in xs if x is not None and math.isfinite(x))
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def analyse(runs: Path, pool_dir: Path, docs: Path, s: Settings, window: int = 10) -> dict[str, Any]:
    """``summary.json``, plots and README tables from the finished runs.

    Definitions (all rewards are the trainer's total reward 0.5 x format + 2 x code, in [0, 2.5], of a rollout
    batch's 32 completions, taken at the batch's first update, i.e. from the policy that decoded it):

    - ``reward_gain_mean``: mean over seeds and rollout batches of (estimator's batch reward - the lr = 0
      control's batch reward, same seed and batch index: same prompts, same rollout generator). Batch 0 is
      decoded before any update, so its difference is 0 by construction and is left out.
    - ``reward_gain_ci95``: :func:`block_bootstrap` interval of that mean.
    - ``vs_coupled``: the same with coupled's batch reward in place of the control's.
    - ``heldout_pass1_before`` / ``_after``: mean over held-out tasks (and seeds) of solved / samples, samples
      decoded at the rollout settings with the seed's evaluation generator (the same for before and after).
    - ``heldout_delta_ci95``: :func:`task_bootstrap` interval of the per-task after - before difference.
    """
    train, held, pool_info = load_pool(pool_dir)
    plan = build_plan(s)
    results: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for p in plan:
        f = runs / p.name / "result.json"
        if f.is_file():
            results[p.name] = json.loads(f.read_text())
        elif not finished(runs, p, s):
            missing.append(p.name)
    before: dict[int, list[dict[str, Any]]] = {}
    for seed in s.seeds:
        f = runs / f"before-s{seed}.json"
        if f.is_file():
            before[seed] = json.loads(f.read_text())["tasks"]
    choice = json.loads((runs / "lr_choice.json").read_text()) if (runs / "lr_choice.json").is_file() else None
    docs.mkdir(parents=True, exist_ok=True)

    def arm(kind: str, est: str) -> dict[int, dict[str, Any]]:
        return {r["spec"]["seed"]: r for r in results.values()
                if r["spec"]["kind"] == kind and r["spec"]["estimator"] == est} if kind != "main" else \
            {r["spec"]["seed"]: r for r in results.values()
             if r["spec"]["estimator"] == est and r["spec"]["beta"] == 0 and not r["spec"]["toy"]
             and r["spec"]["kind"] in ("main", "sweep") and choice is not None and r["lr"] == choice["lr"]}

    controls = {r["spec"]["seed"]: r for r in results.values() if r["spec"]["kind"] == "control"}

    def paired(runs_by_seed: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], key: str = "reward_mean"
               ) -> dict[int, list[float]]:
        out = {}
        for seed, r in runs_by_seed.items():
            if seed in base:
                a, b = _rewards_by_batch(r, key), _rewards_by_batch(base[seed], key)
                n = min(len(a), len(b))
                if n > 1:
                    out[seed] = [x - y for x, y in zip(a[1:n], b[1:n])]
        return out

    def heldout(runs_by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
        per_seed: dict[int, list[float]] = {}
        bef, aft = [], []
        for seed, r in runs_by_seed.items():
            if r.get("heldout_after") is None or seed not in before:
                continue
            b = {t["task_id"]: t["solved"] / t["samples"] for t in before[seed]}
            a = {t["task_id"]: t["solved"] / t["samples"] for t in r["heldout_after"]}
            ids = sorted(set(a) & set(b))
            per_seed[seed] = [a[i] - b[i] for i in ids]
            bef.append(sum(b[i] for i in ids) / len(ids))
            aft.append(sum(a[i] for i in ids) / len(ids))
        if not per_seed:
            return {}
        m, ci = task_bootstrap(per_seed)
        return {"heldout_pass1_before": _mean(bef), "heldout_pass1_after": _mean(aft), "heldout_delta_mean": m,
                "heldout_delta_ci95": ci, "heldout_seeds": sorted(per_seed)}

    def diagnostics(runs_by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
        hs = [h for r in runs_by_seed.values() for h in r["history"]]
        first = [h for h in hs if h["iteration"] == 0]
        steps = [r["train_seconds"] / max(1, len(r["history"])) for r in runs_by_seed.values()
                 if not r.get("resumed")]
        return {"zero_variance_group_share": _mean([h["zero_variance_frac"] for h in first]),
                "kl_k3_median": _median([h["kl"] for h in hs]), "kl_k3_max": max([h["kl"] for h in hs], default=0),
                "clip_frac_mean": _mean([h["clip_frac"] for h in hs if h["iteration"] > 0]),
                "seconds_per_step": _mean(steps)}

    summary: dict[str, Any] = {
        "what": "Coupled-GRPO estimators from one SFT model on prompts at its edge: paired training-reward gains "
                "against an lr = 0 control and held-out pass@1 before/after (benchmarks/rl_experiment.py).",
        "start_model": pool_info.get("start_model"), "settings": dataclasses.asdict(s),
        "pool": {k: {kk: v[kk] for kk in ("unique_prompts", "kept", "per_tier")}
                 for k, v in pool_info["splits"].items()},
        "lr_choice": choice, "missing_runs": missing,
        "design": {"train_pool_prompts": len(train), "heldout_pool_tasks": len(held),
                   "rollout_batches_per_run": s.steps // s.num_iterations,
                   "batches_compared_per_seed": max(0, s.steps // s.num_iterations - 1),
                   "completions_per_batch": s.num_generations * s.prompts_per_batch,
                   "optimizer_steps_per_run": s.steps, "eval_samples_per_task": s.eval_samples},
        "not_in_plan": ([f"estimator {e}" for e in ESTIMATORS if e not in s.estimators]
                        + ([] if s.kl_arm else [f"coupled beta {s.kl_beta:g} clamped-KL arm"])
                        + ([] if s.toy_arm else ["toy-reward control"])
                        + ([] if s.fixed_lr is None else [f"lr sweep (fixed lr {s.fixed_lr:g})"])),
        "definitions": {
            "reward": "total reward 0.5*format + 2*code (range 0..2.5) of one rollout batch (4 prompts x 8), from "
                      "the policy that decoded it",
            "reward_gain_mean": "mean over seeds and rollout batches 1..B-1 of (run's batch reward - lr=0 "
                                "control's batch reward, same seed and batch: same prompts and rollout generator)",
            "reward_gain_ci95": "95% percentile bootstrap: seeds resampled with replacement, then a moving-block "
                                "bootstrap (blocks of min(10, n//3) of a seed's n batches) within each seed; 2000 "
                                "draws",
            "vs_coupled": "the same paired difference against coupled (beta 0) instead of the control",
            "code_gain_mean": "as reward_gain_mean for the code reward alone (fraction of tests passed)",
            "heldout_pass1": "mean over held-out-pool tasks of solved/4 samples at the rollout settings; before = "
                             "start model, after = trained model, same evaluation generator seed per run seed",
            "heldout_delta_ci95": "95% percentile bootstrap of the per-task after-before difference: tasks and "
                                  "seeds resampled with replacement; 2000 draws",
            "eval_noise": "the start model evaluated with two evaluation seeds: per-task difference (what an "
                          "unpaired before/after comparison would see from sampling alone)",
        },
        "estimators": {}, "arms": {}, "controls": {},
    }
    def arm_summary(rs: dict, e: dict[str, Any], vs_coupled: str | None) -> dict[str, Any]:
        """``e`` plus the arm's paired gains over the control (and, under key ``vs_coupled``, over coupled beta 0),
        held-out change and diagnostics."""
        d = paired(rs, controls)
        if d:
            e["reward_gain_mean"], e["reward_gain_ci95"] = block_bootstrap(d)
            e["reward_gain_seeds"] = sorted(d)
            e["code_gain_mean"], e["code_gain_ci95"] = block_bootstrap(paired(rs, controls, "reward/code"))
        dc = paired(rs, arm("main", "coupled")) if vs_coupled else None
        if dc:
            m, ci = block_bootstrap(dc)
            e[vs_coupled] = {"mean": m, "ci95": ci, "seeds": sorted(dc)}
        e.update(heldout(rs))
        e.update(diagnostics(rs))
        return e

    for est in ESTIMATORS:
        rs = arm("main", est)
        if not rs:
            continue
        first = rs[next(iter(rs))]
        summary["estimators"][est] = arm_summary(
            rs, {"seeds": sorted(rs), "lr": first["lr"], "passes": first["passes"], "beta": 0.0},
            None if est == "coupled" else "vs_coupled")
    kl = {r["spec"]["seed"]: r for r in results.values() if r["spec"]["kind"] == "kl"}
    if kl:
        e = arm_summary(kl, {"seeds": sorted(kl), "estimator": "coupled", "beta": s.kl_beta, "kl_clamp": s.kl_clamp,
                             "lr": kl[next(iter(kl))]["lr"]}, "vs_coupled_beta0")
        e["kl_clamped_frac_mean"] = _mean([h.get("kl_clamped_frac") for r in kl.values() for h in r["history"]])
        summary["arms"][f"coupled_beta{s.kl_beta:g}_klclamp{s.kl_clamp:g}"] = e
    sweep = {r["lr"]: r for r in results.values() if r["spec"]["kind"] == "sweep"}
    if sweep and s.seeds[0] in controls:
        summary["sweep"] = {}
        for lr, r in sorted(sweep.items()):
            d = paired({s.seeds[0]: r}, controls)
            m, ci = block_bootstrap(d) if d else (math.nan, [math.nan, math.nan])
            summary["sweep"][f"{lr:g}"] = {"reward_gain_mean": m, "reward_gain_ci95": ci, **heldout({s.seeds[0]: r}),
                                           **diagnostics({s.seeds[0]: r})}
    if controls:
        c = {"seeds": sorted(controls), **heldout(controls),
             "reward_mean": _mean([x for r in controls.values() for x in _rewards_by_batch(r)]),
             "zero_variance_group_share": diagnostics(controls)["zero_variance_group_share"],
             "seconds_per_step": diagnostics(controls)["seconds_per_step"]}
        c["note"] = ("lr = 0: the start model's own rollouts on every batch; its held-out 'after' uses the same "
                     "evaluation seed as 'before' on unchanged weights, so its delta must be exactly 0 (a check "
                     "of the pairing)")
        summary["controls"]["lr0"] = c
    if len(before) >= 2:
        ks = sorted(before)
        b0 = {t["task_id"]: t["solved"] / t["samples"] for t in before[ks[0]]}
        b1 = {t["task_id"]: t["solved"] / t["samples"] for t in before[ks[1]]}
        ids = sorted(set(b0) & set(b1))
        m, ci = task_bootstrap({0: [b1[i] - b0[i] for i in ids]})
        summary["controls"]["eval_noise"] = {"seeds": ks[:2], "delta_mean": m, "delta_ci95": ci,
                                             "pass1": [_mean(list(b0.values())), _mean(list(b1.values()))]}
    toy = [r for r in results.values() if r["spec"]["kind"] == "toy"]
    toyc = [r for r in results.values() if r["spec"]["kind"] == "toy_control"]
    if toy and toyc:
        d = paired({0: toy[0]}, {0: toyc[0]})
        m, ci = block_bootstrap(d)
        a = _rewards_by_batch(toy[0])
        k = max(1, len(a) // 4)
        summary["controls"]["toy_reward"] = {
            "estimator": "coupled", "lr": toy[0]["lr"], "steps": toy[0]["spec"]["steps"],
            "gain_vs_lr0_mean": m, "gain_vs_lr0_ci95": ci,
            "reward_first_quarter": _mean(a[:k]), "reward_last_quarter": _mean(a[-k:]),
            "note": "reward = fraction of lower-case vowels in the answer; the pipeline learns when the gain is > 0"}
    summary["ordering"] = ordering_statement(summary)
    atomic_write_json(docs / "summary.json", summary)
    plot_all(results, controls, summary, docs, s, window)
    write_readme_tables(docs / "README.md", summary)
    print(f"wrote {docs / 'summary.json'} and plots; {len(results)} runs finished, {len(missing)} missing"
          + (f": {', '.join(missing)}" if missing else ""))
    return summary


def ordering_statement(summary: dict[str, Any]) -> str:
    """A plain statement of what the paired CIs support (generated; the README discusses it)."""
    ests = summary["estimators"]
    if not ests:
        return "no finished runs"
    parts = []
    learns = [k for k, v in ests.items() if "reward_gain_ci95" in v and v["reward_gain_ci95"][0] > 0]
    hurts = [k for k, v in ests.items() if "reward_gain_ci95" in v and v["reward_gain_ci95"][1] < 0]
    flat = [k for k in ests if k not in learns and k not in hurts]
    parts.append(f"training-reward gain vs the lr=0 control: CI above 0 for {', '.join(learns) or 'none'}; "
                 f"below 0 for {', '.join(hurts) or 'none'}; includes 0 for {', '.join(flat) or 'none'}")
    better = [k for k, v in ests.items() if "vs_coupled" in v and v["vs_coupled"]["ci95"][0] > 0]
    worse = [k for k, v in ests.items() if "vs_coupled" in v and v["vs_coupled"]["ci95"][1] < 0]
    tied = [k for k, v in ests.items() if "vs_coupled" in v and k not in better and k not in worse]
    parts.append(f"paired against coupled: better {', '.join(better) or 'none'}; worse {', '.join(worse) or 'none'}; "
                 f"within noise {', '.join(tied) or 'none'}")
    hup = [k for k, v in ests.items() if "heldout_delta_ci95" in v and v["heldout_delta_ci95"][0] > 0]
    hdown = [k for k, v in ests.items() if "heldout_delta_ci95" in v and v["heldout_delta_ci95"][1] < 0]
    parts.append(f"held-out pass@1 delta: CI above 0 for {', '.join(hup) or 'none'}; below 0 for "
                 f"{', '.join(hdown) or 'none'}")
    ranked = sorted((v.get("reward_gain_mean", math.nan), k) for k, v in ests.items())
    parts.append("point estimates of the reward gain, high to low: "
                 + " > ".join(f"{k} ({m:+.3f})" for m, k in reversed(ranked)))
    return "; ".join(parts)


def _fmt_ci(m: float | None, ci: list[float] | None, pct: bool = False) -> str:
    if m is None or ci is None or not math.isfinite(m):
        return "n/a"
    if pct:
        return f"{100 * m:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return f"{m:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def results_tables(summary: dict[str, Any]) -> str:
    """The README's generated tables (markdown)."""
    lines = ["| estimator | passes | seeds | reward gain vs lr=0 [95% CI] | code gain [95% CI] | vs coupled [95% CI] "
             "| held-out pass@1 before -> after | held-out delta, points [95% CI] | zero-var groups | k3 KL median / "
             "max | clip frac | s/step |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(k, v) for k, v in summary["estimators"].items()] + [
        (f"{k} (arm)", v) for k, v in summary["arms"].items()]
    for k, v in rows:
        vc = v.get("vs_coupled") or v.get("vs_coupled_beta0")
        ba = (f"{100 * v['heldout_pass1_before']:.1f}% -> {100 * v['heldout_pass1_after']:.1f}%"
              if "heldout_pass1_before" in v else "n/a")
        lines.append(
            f"| {k} | {v.get('passes', 3)} | {len(v['seeds'])} | {_fmt_ci(v.get('reward_gain_mean'), v.get('reward_gain_ci95'))} "
            f"| {_fmt_ci(v.get('code_gain_mean'), v.get('code_gain_ci95'))} "
            f"| {_fmt_ci(vc['mean'], vc['ci95']) if vc else '-'} | {ba} "
            f"| {_fmt_ci(v.get('heldout_delta_mean'), v.get('heldout_delta_ci95'), pct=True)} "
            f"| {100 * v['zero_variance_group_share']:.0f}% | {v['kl_k3_median']:.3g} / {v['kl_k3_max']:.3g} "
            f"| {v['clip_frac_mean']:.3f} | {v['seconds_per_step']:.2f} |")
    out = ["\n".join(lines), ""]
    c = summary["controls"]
    if "lr0" in c:
        v = c["lr0"]
        out.append(f"- **lr = 0 control** ({len(v['seeds'])} seeds): mean batch reward {v['reward_mean']:.3f}, "
                   f"zero-variance groups {100 * v['zero_variance_group_share']:.0f}%, held-out delta "
                   f"{_fmt_ci(v.get('heldout_delta_mean'), v.get('heldout_delta_ci95'), pct=True)} points "
                   f"(exactly 0 expected: same weights, same evaluation seed).")
    if "eval_noise" in c:
        v = c["eval_noise"]
        out.append(f"- **evaluation noise** (start model, evaluation seeds {v['seeds'][0]} vs {v['seeds'][1]}): "
                   f"pass@1 {100 * v['pass1'][0]:.1f}% vs {100 * v['pass1'][1]:.1f}%, per-task delta "
                   f"{_fmt_ci(v['delta_mean'], v['delta_ci95'], pct=True)} points.")
    if "toy_reward" in c:
        v = c["toy_reward"]
        out.append(f"- **toy reward** (vowel fraction, coupled, lr {v['lr']:g}, {v['steps']} steps): reward "
                   f"{v['reward_first_quarter']:.3f} -> {v['reward_last_quarter']:.3f} (first -> last quarter), "
                   f"gain vs its lr = 0 control {_fmt_ci(v['gain_vs_lr0_mean'], v['gain_vs_lr0_ci95'])}.")
    if summary.get("lr_choice"):
        ch = summary["lr_choice"]
        cand = "; ".join(f"{c['lr']:g}: 2nd-half gain {c['gain_2nd_half']:+.3f}, last-quarter {c['gain_last_quarter']:+.3f}"
                         f"{' (collapsed)' if c['collapsed'] else ''}" for c in ch["candidates"])
        if ch["candidates"]:
            out.append(f"- **lr sweep** (coupled, seed 0, vs control 0): {cand}. Chosen {ch['lr']:g} ({ch['rule']}).")
        else:
            out.append(f"- **lr**: {ch['lr']:g} for every run ({ch['rule']}).")
    if summary.get("not_in_plan"):
        out.append(f"- **not run** (left out of this plan): {', '.join(summary['not_in_plan'])}.")
    if summary["missing_runs"]:
        out.append(f"- **missing runs** ({len(summary['missing_runs'])}): {', '.join(summary['missing_runs'])}.")
    out.append(f"- **generated ordering statement**: {summary['ordering']}.")
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- results:begin (generated by rl_experiment.py analyse) -->", "<!-- results:end -->"


def write_readme_tables(readme: Path, summary: dict[str, Any]) -> None:
    """Replace the generated block of the README (between the markers); append it when there are none."""
    text = readme.read_text() if readme.is_file() else "# RL experiment\n\n"
    block = f"{BEGIN}\n{results_tables(summary)}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, readme)


def plot_all(results: dict[str, dict[str, Any]], controls: dict[int, dict[str, Any]], summary: dict[str, Any],
             docs: Path, s: Settings, window: int) -> None:
    """reward_curves.png (per estimator: smoothed batch reward, and its paired gain vs the control, mean over seeds
    with a 95% band across seeds), paired_differences.png and heldout_deltas.png (forest plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    choice = summary.get("lr_choice")
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results.values():
        sp = r["spec"]
        if sp["toy"]:
            continue
        if sp["kind"] == "kl":
            groups.setdefault(f"coupled beta {sp['beta']:g} (KL clamp)", {})[sp["seed"]] = r
        elif sp["kind"] in ("main", "sweep") and choice is not None and r["lr"] == choice["lr"]:
            groups.setdefault(sp["estimator"], {})[sp["seed"]] = r
        elif sp["kind"] == "control":
            groups.setdefault("lr = 0 control", {})[sp["seed"]] = r
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    n_min = min((len(_rewards_by_batch(r)) for rs in groups.values() for r in rs.values()), default=window)
    k = max(1, min(window, n_min // 4))  # a short run still gets a curve
    for name, rs in sorted(groups.items()):
        for ax, rel in zip(axes, (False, True)):
            curves = []
            for seed, r in rs.items():
                a = np.asarray(_rewards_by_batch(r))
                if rel:
                    if seed not in controls or name == "lr = 0 control":
                        continue
                    b = np.asarray(_rewards_by_batch(controls[seed]))
                    n = min(len(a), len(b))
                    a = a[:n] - b[:n]
                if len(a) >= k:
                    curves.append(np.convolve(a, np.ones(k) / k, mode="valid"))
            if not curves:
                continue
            L = min(len(c) for c in curves)
            arr = np.stack([c[:L] for c in curves])  # (seeds, batches)
            x = np.arange(k, L + k)
            m = arr.mean(0)
            ax.plot(x, m, label=f"{name} ({len(curves)} seeds)", lw=2 if "control" in name else 1.5,
                    ls="--" if "control" in name else "-")
            if len(curves) > 1:
                half = 1.96 * arr.std(0, ddof=1) / math.sqrt(len(curves))
                ax.fill_between(x, m - half, m + half, alpha=0.15)
    axes[0].set_title("batch reward (moving average)")
    axes[1].set_title("paired gain: run - lr=0 control, same seed and batch")
    axes[1].axhline(0, color="k", lw=0.8)
    for ax in axes:
        ax.set_xlabel(f"rollout batch (moving average of {k})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward (0.5 format + 2 code)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("band: mean +- 1.96 s.e. across seeds")
    fig.tight_layout()
    fig.savefig(docs / "reward_curves.png", dpi=110)
    plt.close(fig)

    def forest(path: Path, items: list[tuple[str, float, list[float]]], xlabel: str, title: str) -> None:
        fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(items) + 1.6))
        for i, (lab, m, ci) in enumerate(items):
            ax.errorbar([m], [i], xerr=[[m - ci[0]], [ci[1] - m]], fmt="o", capsize=4)
        ax.set_yticks(range(len(items)))
        ax.set_yticklabels([it[0] for it in items], fontsize=8)
        ax.axvline(0, color="k", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    items = []
    for est, v in list(summary["estimators"].items()) + list(summary["arms"].items()):
        if "reward_gain_ci95" in v:
            items.append((f"{est} - lr=0 control", v["reward_gain_mean"], v["reward_gain_ci95"]))
    for est, v in list(summary["estimators"].items()) + list(summary["arms"].items()):
        vc = v.get("vs_coupled") or v.get("vs_coupled_beta0")
        if vc:
            items.append((f"{est} - coupled", vc["mean"], vc["ci95"]))
    if items:
        forest(docs / "paired_differences.png", items, "mean paired difference of batch reward",
               "training reward, paired by seed and rollout batch\n(95% bootstrap over seeds and batch blocks)")
    items = []
    for est, v in list(summary["estimators"].items()) + list(summary["arms"].items()):
        if "heldout_delta_ci95" in v:
            items.append((f"{est}: {100 * v['heldout_pass1_before']:.0f}% -> {100 * v['heldout_pass1_after']:.0f}%",
                          100 * v["heldout_delta_mean"], [100 * x for x in v["heldout_delta_ci95"]]))
    if "eval_noise" in summary["controls"]:
        v = summary["controls"]["eval_noise"]
        items.append(("eval noise (start model, 2 eval seeds)", 100 * v["delta_mean"],
                      [100 * x for x in v["delta_ci95"]]))
    if items:
        forest(docs / "heldout_deltas.png", items, "held-out pass@1 after - before (points)",
               f"held-out pool, {s.eval_samples} samples per task, paired per task\n(95% bootstrap over tasks and seeds)")


def cmd_analyse(args: argparse.Namespace, s: Settings) -> int:
    runs = Path(args.runs)
    f = runs / "experiment.json"
    if not f.is_file():
        raise SystemExit(f"--runs: {runs} has no experiment.json (not a runner folder)")
    saved = json.loads(f.read_text())["settings"]
    fields = {fl.name for fl in dataclasses.fields(Settings)}
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})
    analyse(runs, Path(args.pool), Path(args.docs), s, args.window)
    return 0


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tiny", action="store_true", help="tiny random model and tiny settings (pipeline check)")
    common.add_argument("--model", default=None, help="start (SFT) checkpoint folder with tokenizer.json")
    dec = argparse.ArgumentParser(add_help=False)
    d = Settings()
    dec.add_argument("--temperature", type=float, default=d.temperature, help="rollout temperature")
    dec.add_argument("--max-completion-length", type=int, default=d.max_completion_length)
    dec.add_argument("--block-length", type=int, default=d.block_length)
    dec.add_argument("--threshold", type=float, default=d.threshold, help="parallel-decoding confidence threshold")
    dec.add_argument("--cache", default=d.use_cache, choices=["prefix", "dual", "none"])
    p = sub.add_parser("pool", parents=[common, dec], help="score prompts once and keep those at the model's edge")
    p.add_argument("--out", required=True)
    p.add_argument("--tiers", default="easy,medium")
    p.add_argument("--train-tasks", type=int, default=320)
    p.add_argument("--test-tasks", type=int, default=160)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--keep-min", type=int, default=2)
    p.add_argument("--keep-max", type=int, default=6)
    p.add_argument("--task-seed", type=int, default=100)
    p.add_argument("--score-seed", type=int, default=7)
    p.add_argument("--force", action="store_true", help="rebuild an existing pool")
    p.add_argument("--train-from", default=None, help="copy the training pool of this pool folder (scored with "
                   "the same settings) and score only the held-out split")
    r = sub.add_parser("run", parents=[common, dec], help="the resumable runner of the plan")
    r.add_argument("--pool", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--steps", type=int, default=d.steps, help="optimizer steps per run (mu = 2 per rollout batch)")
    r.add_argument("--toy-steps", type=int, default=d.toy_steps)
    r.add_argument("--seeds", default=",".join(map(str, d.seeds)))
    r.add_argument("--sweep-lrs", default=",".join(f"{x:g}" for x in d.sweep_lrs))
    r.add_argument("--lr", type=float, default=None, help="one learning rate for every run, no sweep")
    r.add_argument("--estimators", default=",".join(ESTIMATORS), help="the main comparison's estimators")
    r.add_argument("--no-kl-arm", action="store_true", help="skip the clamped-KL arm")
    r.add_argument("--no-toy", action="store_true", help="skip the toy-reward pair")
    r.add_argument("--workers", type=int, default=1, help="worker processes (one thread each)")
    r.add_argument("--only", default=None, help="comma-separated run names (default: the whole plan)")
    r.add_argument("--poll", type=float, default=20.0, help="seconds between looks for a free run")
    a = sub.add_parser("analyse", help="summary.json, plots and README tables from the finished runs")
    a.add_argument("--runs", required=True)
    a.add_argument("--pool", required=True)
    a.add_argument("--docs", required=True)
    a.add_argument("--window", type=int, default=10, help="moving-average window of the reward curves")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    s = Settings()
    if args.cmd in ("pool", "run"):
        s.temperature = args.temperature
        s.max_completion_length = args.max_completion_length
        s.block_length = args.block_length
        s.threshold = args.threshold
        s.use_cache = None if args.cache == "none" else args.cache
        if args.tiny:
            for k, v in TINY.items():
                setattr(s, k, v)
    if args.cmd == "run":
        if not args.tiny:
            s.steps, s.toy_steps = args.steps, args.toy_steps
            try:
                s.seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
                s.sweep_lrs = tuple(float(x) for x in args.sweep_lrs.split(",") if x.strip())
            except ValueError as e:
                raise SystemExit(f"--seeds/--sweep-lrs: {e}") from None
        ests = tuple(x.strip() for x in args.estimators.split(",") if x.strip())
        bad = [x for x in ests if x not in ESTIMATORS]
        if bad or not ests:
            raise SystemExit(f"--estimators: unknown {bad or 'empty list'}; choose from {', '.join(ESTIMATORS)}")
        if args.lr is not None and not args.lr > 0:
            raise SystemExit(f"--lr: must be > 0 (the lr = 0 control is always in the plan), got {args.lr}")
        s.estimators, s.fixed_lr, s.kl_arm, s.toy_arm = ests, args.lr, not args.no_kl_arm, not args.no_toy
        if not s.seeds or not s.sweep_lrs or s.steps < 2 or any(lr <= 0 for lr in s.sweep_lrs):
            raise SystemExit("--seeds and --sweep-lrs need at least one value (lrs > 0), --steps at least 2")
        if s.steps % s.num_iterations or s.toy_steps % s.num_iterations:
            raise SystemExit(f"--steps/--toy-steps must be multiples of num_iterations ({s.num_iterations})")
    return args, s


def main(argv: list[str] | None = None) -> int:
    args, s = parse(argv)
    return {"pool": cmd_pool, "run": cmd_run, "analyse": cmd_analyse}[args.cmd](args, s)


if __name__ == "__main__":
    sys.exit(main())
