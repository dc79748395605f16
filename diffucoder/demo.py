"""The end-to-end DiffuCoder pipeline, small enough for a laptop CPU (``diffucoder demo``).

From nothing but the running Python and the synthetic task generator:

1. ``tokenizer``  train a byte-level BPE on the standard-library sources plus synthetic task texts (train split);
2. ``pretrain``   masked-diffusion pretraining of a small Dream model on the stdlib corpus + synthetic solutions
                  (not in the default recipe: ``pretrain_steps=0``, SFT from a fresh model learned faster);
3. ``sft``        supervised fine-tuning on chat-formatted synthetic tasks (prompt kept clean, pad learned);
4. ``eval_sft``   pass@1 / pass@k per difficulty tier on held-out tasks (combinations never seen in training),
                  sandboxed execution of every sample;
5. ``analysis``   the paper's decoding-order study (local / global AR-ness, entropy sink) on held-out prompts;
6. ``rl``         coupled-GRPO from the SFT model with code-execution rewards, then ``eval_rl`` re-evaluates;
7. ``report``     ``report.md`` with tables and PNG plots (loss curves, pass@k by tier, AR-ness, rewards).

Every stage writes ``stages/<name>.json`` when it finishes; an interrupted demo resumes from the last finished
stage (and the training stages themselves resume from their last checkpoint). ``--quick`` is sized for about
2 minutes on 2 CPU cores, the default for about 20 (SFT is 15 of them); docs/demo-recipe.md says how.

    from diffucoder.demo import run_demo
    summary = run_demo("runs/demo", quick=True)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from diffucoder.tasks.concepts import TIERS, check_tiers

STAGES = ("tokenizer", "pretrain", "sft", "eval_sft", "analysis", "rl", "eval_rl", "report")


@dataclass(frozen=True)
class DemoSettings:
    """Budgets of one demo run (``QUICK`` and ``FULL`` below)."""

    vocab_size: int = 4096
    """BPE vocabulary."""
    tokenizer_stdlib_files: int = 300
    """Standard-library files (sorted order) in the tokenizer's training texts."""
    preset: str = "5m"
    """Model shape (DreamConfig.preset). The default run uses "4m" (the 5m shape with 4 layers, 1.4x cheaper a
    step): trained from scratch it learns the easy tier at least as fast per step as 5m (docs/demo-recipe.md)."""
    pretrain_steps: int = 80
    """Masked-diffusion pretraining steps; 0: no pretraining stage (SFT starts from a freshly initialised model)."""
    pretrain_batch: int = 16
    pretrain_seq_len: int = 128
    pretrain_lr: float = 2e-3
    pretrain_stdlib_files: int | None = None
    """Use only the first N standard-library files (None: all)."""
    synthetic_solutions: int = 4000
    """Synthetic canonical solutions mixed into the pretraining corpus."""
    synthetic_questions: bool = True
    """Head each of those solutions with its question as a comment (teaches the text-to-code copying)."""
    sft_steps: int = 100
    sft_batch: int = 16
    sft_tasks: int = 4000
    sft_max_length: int = 160
    sft_tiers: tuple[str, ...] = ("easy",)
    """Tiers of the SFT tasks, round-robin (repeat one to weight it). The default run uses four easy to one
    medium: from a fresh 4m model and 2,000 steps that solves 55% of the held-out easy tasks and 5% of the medium
    ones, easy only 59% and 0% (docs/demo-recipe.md)."""
    sft_tier_batches: bool = True
    """Draw every SFT batch from one tier (sft.batch_groups=source): with flexible padding, a batch of easy tasks
    is then not padded to a longer medium row. No effect with one tier, nor with ``sft_packing`` (packed rows mix
    examples by design, and the training config refuses the pair)."""
    sft_padding: Literal["fixed", "flexible"] = "flexible"
    """SFT row padding (sft.padding): "flexible" pads to the batch's longest row (fewer pad targets, about a
    third less compute per step than fixed 160-token rows); "fixed" is DiffuCoder's."""
    sft_packing: bool = False
    """Pack several SFT examples into each row of ``sft_pack_length`` tokens (block-diagonal attention, each
    example its own positions, noise level and mask: computed exactly as alone); ``sft_batch`` then counts rows."""
    sft_pack_length: int = 256
    """Tokens per packed row. Each example takes its prompt plus a ``max_new_tokens`` answer region (answer,
    ``<|im_end|>``, pad targets), as unpacked fixed-length SFT and the decoding canvas do."""
    prompt_format: Literal["default", "short"] = "default"
    """User message of every synthetic task the demo trains, evaluates, analyses and rewards: "default" (the
    question, then the answer-format instruction) or "short" (the question only)."""
    system_prompt: str | None = "You are a helpful assistant."
    """System turn of every chat prompt (None: no system turn; with "short" prompts about 30 fewer tokens an
    example than the default format, so SFT sees ~1.7x the examples a second)."""
    sft_lr: float = 2e-3
    """Peak SFT learning rate. The default run uses 1e-3: from one pretrained 5m model and 38,400 examples, 1e-3
    solved 49% of the held-out easy tasks and 2e-3 14%; 4e-3 stalls and 5e-4 learns slower (docs/demo-recipe.md)."""
    sft_loss_weighting: Literal["elbo", "none"] = "none"
    """"elbo" (1/t-weighted masked CE, DiffuCoder's) or "none" (plain masked CE); see
    DiffusionSection.loss_weighting."""
    sft_t_min: float = 1e-3
    """SFT noise levels t ~ U(sft_t_min, 1) (DiffusionSection.eps; the paper's 1e-3). A higher floor masks more of
    each answer (mean (1 + sft_t_min) / 2), so every example carries more loss-bearing tokens, and trains the
    heavily masked canvases decoding starts from; a deviation from the reference's SFT."""
    eval_tasks_per_tier: int = 8
    eval_samples: int = 2
    """Sampled completions per task at ``eval_temperature``, for pass@k (k up to this); 0: greedy pass@1 only.
    Greedy pass@1 (one arg-max completion a task) is always measured."""
    eval_temperature: float = 0.4
    max_new_tokens: int = 64
    eval_steps: int = 32
    """Decoding steps for evaluation (max_new_tokens / eval_steps tokens per step; unused with a threshold)."""
    eval_block_length: int | None = 16
    """Semi-AR decoding blocks for evaluation and RL rollouts (None: one block)."""
    eval_threshold: float | None = 0.9
    """Parallel decoding threshold for evaluation and RL rollouts (None: ``eval_steps`` steps)."""
    eval_use_cache: Literal["prefix", "dual"] | None = "dual"
    """KV cache for evaluation and RL rollouts (with ``eval_block_length``)."""
    eval_early_stop: bool = True
    """Stop decoding once every answer has ended (the text is unchanged)."""
    eval_top_k: int | None = None
    """Top-k of evaluation and rollout decoding (None: off; 50 is what the reference inherits)."""
    analysis_prompts: int = 4
    analysis_temperatures: tuple[float, ...] = (0.2, 1.0)
    rl_steps: int = 2
    rl_prompts_per_step: int = 2
    rl_num_generations: int = 4
    rl_lr: float = 5e-5
    rl_temperature: float = 1.0
    """Rollout temperature (the paper found 1.2 better than 1.0 for 7B models)."""
    rl_tiers: tuple[str, ...] = ("easy",)
    """Tiers of the RL prompts. Easy only by default: the SFT model solves almost no medium or hard task, so
    those rollout groups would differ only by the format reward."""
    stage_minutes_cap: float = 3.0
    """Guard on each training stage's wall time. The budgets are steps, so a run's result does not depend on the
    machine's speed; a stage the cap cuts short is flagged in the log and the report."""
    start_from: str | None = None
    """Start the evaluation, analysis and RL stages from a trained SFT checkpoint instead of training one: a folder
    (config.json, weights, tokenizer.json) or "shipped", the 5M checkpoint that ships with diffucoder (trained by
    this demo's default recipe, stored in bf16; ``diffucoder/demo_checkpoint/README.md`` gives its recipe and
    figures). The tokenizer, pretraining and SFT stages then only record where the model came from. A
    ``demo_recipe.json`` beside the weights names the prompt format and system prompt the model was trained
    with; the evaluation, analysis and RL stages use those (a setting that differs is replaced, with a note)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Training precision ("fp32" or "bf16" autocast). On CPUs without AMX, bf16 matmuls are slower than fp32
    (measured here: 148 vs 51 GFLOP/s on one thread), so fp32 is the CPU default; decoding runs in the same."""
    threads: int | None = None
    """torch CPU threads (None: torch's default; 1 helps on a machine busy with other work). With
    ``train_processes`` > 1, the threads of each training process (None: the CPUs shared out)."""
    train_processes: int = 1
    """Processes of the pretraining and SFT stages: above 1, a local DDP job (gloo), the global batch split over
    the ranks. The update is the one-process update (every row's noise is a function of (seed, step, position);
    tested), so this changes the speed, not the model. On the 2-core development machine two one-thread ranks
    were no faster than one two-thread process (SFT 0.96x, pretraining 1.06x: ``benchmarks/train_processes.py``),
    hence 1; it may pay on a machine with more cores."""

    def __post_init__(self) -> None:
        from diffucoder.errors import InputError

        for name in ("sft_tiers", "rl_tiers"):
            try:
                check_tiers(getattr(self, name))
            except ValueError as e:
                raise InputError(f"{name}={getattr(self, name)!r}: {e}") from None
        at_least_zero = {"eval_samples", "pretrain_steps"}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            low = 0 if f.name in at_least_zero or "temperature" in f.name else None
            if low is not None and v < low:
                raise InputError(f"demo setting {f.name} must be >= {low}, got {v}")
            if low is None and isinstance(v, int) and v < 1:
                raise InputError(f"demo setting {f.name} must be >= 1, got {v}")
            if low is None and isinstance(v, float) and not v > 0:
                raise InputError(f"demo setting {f.name} must be > 0, got {v}")
        if self.sft_max_length < 8 or self.pretrain_seq_len < 8:
            raise InputError("demo settings sft_max_length and pretrain_seq_len must be >= 8")
        from diffucoder.tokenizer import SPECIAL_TOKENS

        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise InputError(f"demo setting vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (256 bytes + the "
                             f"special tokens), got {self.vocab_size}")


QUICK = DemoSettings(start_from="shipped", eval_tasks_per_tier=40)
FULL = DemoSettings(
    # no pretraining stage; wave 4's default was --set preset=5m --set pretrain_steps=600 --set sft_steps=3000
    # --set sft_tiers=easy
    vocab_size=4096, tokenizer_stdlib_files=734, preset="4m", pretrain_steps=0, pretrain_batch=16,
    pretrain_seq_len=128, pretrain_stdlib_files=100, synthetic_solutions=20000, sft_steps=2000, sft_batch=16,
    sft_tasks=25000, sft_tiers=("easy", "easy", "easy", "easy", "medium"), sft_lr=1e-3, prompt_format="short",
    system_prompt=None,
    eval_tasks_per_tier=100, eval_samples=2, eval_steps=32, analysis_prompts=8,
    analysis_temperatures=(0.2, 0.6, 1.0, 1.2), rl_steps=16, rl_prompts_per_step=2, rl_num_generations=4,
    stage_minutes_cap=60.0,
)


class Demo:
    """One demo run folder; each ``stage_*`` method is idempotent given its ``stages/<name>.json`` marker."""

    def __init__(self, run_dir: str | Path, settings: DemoSettings, seed: int = 0, progress: bool = True,
                 log: Callable[[str], None] = print, allow_config_change: bool = False) -> None:
        from diffucoder.rundir import check_run_dir

        self.dir = check_run_dir(run_dir, "demo run folder")
        self.s = settings
        self.seed = seed
        self.progress = progress
        self.log = log
        self.allow_config_change = allow_config_change

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def marker(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage}.json"

    def done(self, stage: str) -> dict | None:
        m = self.marker(stage)
        return json.loads(m.read_text()) if m.is_file() else None

    def finish(self, stage: str, info: dict[str, Any]) -> dict[str, Any]:
        from diffucoder.errors import write_text_atomic

        write_text_atomic(self.marker(stage), json.dumps(info, indent=2, default=str))
        return info

    def settings_record(self) -> dict[str, Any]:
        return json.loads(json.dumps({"settings": asdict(self.s), "seed": self.seed}))

    def check_settings(self) -> list:
        """Refuse to resume a run folder made with other settings (its stages would not fit together), naming
        the changed settings, unless ``allow_config_change``; returns the accepted changes. Writes nothing."""
        from diffucoder.rundir import check_changes, config_changes, read_saved

        f = self.dir / "demo_settings.json"
        theirs = read_saved(f)
        if theirs is None:
            return []
        changes = config_changes(theirs, self.settings_record(), ("settings.threads", "settings.train_processes"),
                                 defaults={"settings": asdict(DemoSettings()), "seed": 0})
        nothing_done = not any(self.done(st) for st in STAGES)  # an attempt that finished no stage
        check_changes(changes, self.dir, f, allow=self.allow_config_change or nothing_done, what="demo run",
                      allow_hint="--allow-config-change (finished stages are kept; later ones use the new settings)")
        return changes

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.s.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- stages ---------------------------------------------------------------------------------------------
    def start_checkpoint(self) -> Path | None:
        """The folder of ``start_from`` (None: the demo trains its own model)."""
        return start_folder(self.s.start_from)

    def _skipped_training(self, stage: str) -> dict:
        return {"skipped": True, "start_from": str(self.s.start_from),
                "reason": f"the {stage} stage is not run: the demo starts from a trained checkpoint"}

    def stage_tokenizer(self) -> dict:
        import itertools

        if self.start_checkpoint() is not None:
            return self._skipped_training("tokenizer")

        from diffucoder.data.corpus import iter_stdlib_texts
        from diffucoder.tasks import build_prompt, format_answer, generate_tasks
        from diffucoder.tokenizer import train_tokenizer

        t0 = time.time()
        tasks = generate_tasks(2000, "train", seed=self.seed)
        texts = list(itertools.islice(iter_stdlib_texts(), self.s.tokenizer_stdlib_files))
        texts += [build_prompt(t) + "\n" + format_answer(t) for t in tasks]
        tok = train_tokenizer(texts, vocab_size=self.s.vocab_size)
        tok.save_pretrained(self.dir / "tokenizer")
        return {"path": str(self.dir / "tokenizer"), "vocab_size": tok.vocab_size, "seconds": time.time() - t0}

    def _train(self, name: str, batch: int, overrides: list[str]) -> dict:
        from diffucoder.training import load_config, train
        from diffucoder.training.distributed import run_local_ranks

        common = [f"run_dir={self.dir / name}", f"seed={self.seed}", "runtime.device=cpu",
                  *([f"runtime.threads={self.s.threads}"] if self.s.threads else []),
                  f"runtime.precision={self.s.precision}", f"optim.max_minutes={self.s.stage_minutes_cap}",
                  f"logging.progress={str(self.progress).lower()}", "checkpoint.keep_last=1"]
        n = self.train_processes(batch)
        over = [f"optim.global_batch_size={batch}", f"optim.micro_batch_size={batch // n}"]
        cfg = load_config(None, common + over + overrides)
        if n > 1:
            self.log(f"[demo] {name}: {n} processes (local DDP, gloo), {batch // n} rows each a step")
        r = run_local_ranks(train, (cfg,), n, {"allow_config_change": self.allow_config_change})
        if r.stopped_by_time:
            self.log(f"[demo] warning: the {self.s.stage_minutes_cap:g}-minute stage cap stopped {name} at step "
                     f"{r.steps} of {cfg.optim.steps}: the model saw fewer examples than the recipe asks for, so "
                     f"this run's scores are not the recipe's (a slower or busier machine; raise "
                     f"--set stage_minutes_cap=... to finish the steps)")
        return {"path": str(r.final_path), "steps": r.steps, "planned_steps": cfg.optim.steps,
                "stopped_by_time": r.stopped_by_time, "tokens": r.tokens_seen, "examples": r.examples_seen,
                "final_loss": r.final_loss, "eval": r.eval, "unigram_baseline": r.unigram_baseline,
                "seconds": r.elapsed_s, "metrics": str(self.dir / name / "metrics.jsonl")}

    def train_processes(self, batch: int) -> int:
        """The training stages' process count: ``train_processes``, lowered to a divisor of the global batch."""
        n = max(1, self.s.train_processes)
        while batch % n:
            n -= 1
        return n

    def stage_pretrain(self) -> dict:
        if self.start_checkpoint() is not None:
            return self._skipped_training("pretrain")
        if self.s.pretrain_steps == 0:
            return {"skipped": True, "reason": "the recipe has no pretraining (pretrain_steps=0): SFT starts from "
                                               f"a freshly initialised {self.s.preset} model"}
        return self._train("pretrain", self.s.pretrain_batch, self.pretrain_overrides())

    def pretrain_overrides(self) -> list[str]:
        """The pretraining stage's training-config overrides (beyond run folder, runtime and batch)."""
        s = self.s
        over = [
            "task=pretrain", f"model.preset={s.preset}", f"tokenizer.path={self.dir / 'tokenizer'}",
            f"data.synthetic_solutions={s.synthetic_solutions}", f"data.seq_len={s.pretrain_seq_len}",
            f"data.synthetic_questions={str(s.synthetic_questions).lower()}",
            f"optim.steps={s.pretrain_steps}", f"optim.lr={s.pretrain_lr}",
            f"optim.warmup_steps={max(1, s.pretrain_steps // 20)}", "diffusion.t_sampling=stratified",
            f"eval.every={max(1, s.pretrain_steps // 4)}", "eval.num_sequences=32",
            f"checkpoint.every={max(1, s.pretrain_steps // 4)}",
        ]
        if s.pretrain_stdlib_files:
            over.append(f"data.max_documents={s.pretrain_stdlib_files}")
        return over

    def stage_sft(self) -> dict:
        src = self.start_checkpoint()
        if src is not None:
            return self._copy_start(src)
        pretrained = self.done("pretrain") or {}
        return self._train("sft", self.s.sft_batch, self.sft_overrides(pretrained.get("path")))

    def sft_overrides(self, init_from: str | None) -> list[str]:
        """The SFT stage's training-config overrides (beyond run folder, runtime and batch); ``init_from``: the
        pretrained model (None: a fresh ``preset`` model with the demo's tokenizer, as with ``pretrain_steps=0``)."""
        s = self.s
        start = ([f"model.init_from={init_from}"] if init_from is not None else
                 [f"model.preset={s.preset}", f"tokenizer.path={self.dir / 'tokenizer'}"])
        over = [
            "task=sft", *start,
            f"sft.synthetic_tasks={s.sft_tasks}", f"sft.max_length={s.sft_max_length}", f"sft.padding={s.sft_padding}",
            f"sft.synthetic_tiers=[{','.join(s.sft_tiers)}]",
            f"sft.batch_groups={'source' if s.sft_tier_batches and not s.sft_packing else 'none'}",
            f"sft.progressive_condition_steps={s.sft_steps // 10}", "sft.heldout_fraction=0.02",
            f"optim.steps={s.sft_steps}", f"optim.lr={s.sft_lr}",
            f"optim.warmup_steps={max(1, s.sft_steps // 20)}", "optim.weight_decay=0.0",
            "diffusion.t_sampling=stratified", f"diffusion.loss_weighting={s.sft_loss_weighting}",
            f"diffusion.eps={s.sft_t_min}",
            f"eval.every={max(1, s.sft_steps // 4)}",
            "eval.num_sequences=32", f"checkpoint.every={max(1, s.sft_steps // 4)}",
            f"sft.synthetic_prompt_format={s.prompt_format}",
            f"sft.system_prompt={json.dumps(s.system_prompt) if s.system_prompt is not None else 'null'}",
        ]
        if s.sft_packing:
            # each example's answer region is the decoding canvas (answer, <|im_end|>, pad targets up to
            # max_new_tokens), so SFT trains exactly the canvas the evaluation and the rollouts decode on
            over += ["sft.packing=true", f"sft.max_length={s.sft_pack_length}",
                     f"sft.pack_answer_length={s.max_new_tokens}"]
        return over

    def _copy_start(self, src: Path) -> dict:
        """The ``start_from`` checkpoint as this run's SFT model: loaded (a bf16 file is upcast to the demo's fp32)
        and saved with its tokenizer under ``sft/final``, with the recipe it was trained by."""
        from diffucoder.model import DreamModel
        from diffucoder.tokenizer import load_tokenizer

        t0 = time.time()
        model = DreamModel.from_pretrained(src, torch_dtype="float32")
        tok = load_tokenizer(src)
        out = self.dir / "sft" / "final"
        model.save_pretrained(out, tokenizer=tok)
        recipe = read_recipe(src)
        params = sum(p.numel() for p in model.parameters())
        return {"path": str(out), "start_from": str(self.s.start_from), "parameters": params, "recipe": recipe,
                "seconds": time.time() - t0}

    def decoding(self) -> dict[str, Any]:
        """The evaluation's and the rollouts' ``diffusion_generate`` options beyond steps and temperature."""
        s = self.s
        return {"top_k": s.eval_top_k, "block_length": s.eval_block_length, "threshold": s.eval_threshold,
                "use_cache": s.eval_use_cache, "early_stop": s.eval_early_stop}

    def eval_rows(self) -> list[dict]:
        from diffucoder.tasks import dataset

        return dataset("test", n=self.s.eval_tasks_per_tier * len(TIERS), seed=self.seed,
                       prompt_format=self.s.prompt_format)

    def _evaluate(self, name: str, model_path: str) -> dict:
        """Greedy pass@1 (one arg-max sample a task, EvalPlus's headline number) and, with ``eval_samples``,
        unbiased pass@k from that many samples at ``eval_temperature``; per tier, in ``by_tier``."""
        from diffucoder.evaluation.datasets import load_dataset
        from diffucoder.evaluation.harness import EvalSettings, evaluate, loaded_model_generate_fn
        from diffucoder.model import DreamModel
        from diffucoder.tasks import write_jsonl
        from diffucoder.tokenizer import load_tokenizer

        rows_file = self.dir / "eval_tasks.jsonl"
        if not rows_file.is_file():
            write_jsonl(self.eval_rows(), rows_file)
        ds = load_dataset("synthetic", rows_file)
        tiers = {row["task_id"]: row["tier"] for row in (json.loads(x) for x in rows_file.read_text().splitlines())}
        model = DreamModel.from_pretrained(model_path).eval()  # loaded once for both protocols
        tok = load_tokenizer(model_path)

        def run(kind: str, n: int, ks: tuple[int, ...], temperature: float) -> tuple[Any, dict[str, dict]]:
            generate = loaded_model_generate_fn(model, tok, max_new_tokens=self.s.max_new_tokens,
                                                steps=self.s.eval_steps, temperature=temperature, seed=self.seed,
                                                context=self._autocast, **self.decoding())
            report = evaluate(ds, self.dir / name / kind,
                              EvalSettings(n_samples=n, ks=ks, prompt_style="chat", batch_size=16,
                                           system_prompt=self.s.system_prompt,
                                           generation={"steps": self.s.eval_steps, "temperature": temperature,
                                                       **self.decoding()}),
                              generate=generate, progress=self.progress)
            return report, pass_at_k_by_tier(report.per_task, tiers, ks)

        greedy, rows = run("greedy", 1, (1,), 0.0)
        by_tier = {tier: {"tasks": row["tasks"], "greedy": row["pass@1"]} for tier, row in rows.items()}
        out = {"results": str(greedy.results_path), "by_tier": by_tier, "ks": [], "temperature": None}
        if self.s.eval_samples:
            ks = tuple(k for k in (1, 2, 4, 8) if k <= self.s.eval_samples)
            sampled, rows = run("sampled", self.s.eval_samples, ks, self.s.eval_temperature)
            for tier, row in rows.items():
                by_tier[tier].update({k: v for k, v in row.items() if k != "tasks"})
            out.update(sampled_results=str(sampled.results_path), ks=list(ks), temperature=self.s.eval_temperature)
        return out

    def stage_eval_sft(self) -> dict:
        return self._evaluate("eval_sft", self.done("sft")["path"])

    def stage_analysis(self) -> dict:
        from diffucoder.analysis.experiment import PromptSet, analyze_decoding_order
        from diffucoder.model import DreamModel
        from diffucoder.tokenizer import load_tokenizer

        path = self.done("sft")["path"]
        model = DreamModel.from_pretrained(path).eval()
        tok = load_tokenizer(path)
        rows = self.eval_rows()[: self.s.analysis_prompts]
        texts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], system_prompt=self.s.system_prompt)
                 for r in rows]
        prompts = PromptSet(name="synthetic-heldout", texts=texts, task_ids=[r["task_id"] for r in rows])
        with self._autocast():
            result = analyze_decoding_order(model, tok, prompts, temperatures=list(self.s.analysis_temperatures),
                                            max_new_tokens=self.s.max_new_tokens, seed=self.seed,
                                            progress=self.progress)
        out = self.dir / "analysis"
        result.write(out)
        summary = json.loads((out / "analysis.json").read_text())
        return {"dir": str(out), "summary": summary.get("summary", summary)}

    def stage_rl(self) -> dict:
        """Coupled-GRPO from the SFT model on train-split tasks (RL prompts disjoint from the SFT examples' seed)."""
        from diffucoder.rl import GRPOConfig, train_grpo
        from diffucoder.tasks import generate_tasks, to_rl_record, write_jsonl

        s = self.s
        rows_file = self.dir / "rl_tasks.jsonl"
        if not rows_file.is_file():
            tasks = generate_tasks(s.rl_steps * s.rl_prompts_per_step * 4, "train", seed=self.seed + 1,
                                   tiers=s.rl_tiers)
            write_jsonl([to_rl_record(t, self.s.prompt_format) for t in tasks], rows_file)
        cfg = GRPOConfig.from_dict({
            "model_name_or_path": self.done("sft")["path"], "dataset_path": str(rows_file),
            "output_dir": str(self.dir / "rl"), "seed": self.seed, "estimator": "coupled",
            "max_steps": s.rl_steps, "num_generations": s.rl_num_generations,
            "per_device_train_batch_size": s.rl_num_generations * s.rl_prompts_per_step,
            "learning_rate": s.rl_lr, "warmup_ratio": 0.0, "max_completion_length": s.max_new_tokens,
            "diffusion_steps": s.eval_steps, "temperature": s.rl_temperature, "save_steps": max(1, s.rl_steps // 2),
            "disable_tqdm": not self.progress, "device": "cpu", "resume_from_checkpoint": "latest",
            "system_prompt": s.system_prompt, "system_turn": s.system_prompt is not None,
            "top_k": s.eval_top_k, "generation_block_length": s.eval_block_length,
            "generation_threshold": s.eval_threshold, "generation_use_cache": s.eval_use_cache,
            "generation_early_stop": s.eval_early_stop,
        })
        r = train_grpo(cfg, allow_config_change=self.allow_config_change)
        return {"path": str(r.final_model_dir) if r.final_model_dir else None, "steps": r.steps,
                "counters": r.counters, "metrics": str(r.output_dir / "log.jsonl"),
                "stopped_early": r.stopped_early}

    def stage_eval_rl(self) -> dict | None:
        rl = self.done("rl")
        if not rl or not rl.get("path"):
            return None
        return self._evaluate("eval_rl", rl["path"])

    def stage_report(self) -> dict:
        from diffucoder.demo_report import write_report

        stages = {name: self.done(name) or {} for name in STAGES if name != "report"}
        path = write_report(self.dir, stages, sft_loss_weighting=self.s.sft_loss_weighting)
        return {"report": str(path)}

    # -- driver ---------------------------------------------------------------------------------------------
    def run(self, stop_after: str | None = None) -> dict[str, Any]:
        from diffucoder.errors import InputError, write_text_atomic
        from diffucoder.rundir import log_changes

        if stop_after is not None and stop_after not in STAGES:
            raise InputError(f"stop_after {stop_after!r} is not a stage; stages: {', '.join(STAGES)}")
        changes = self.check_settings()
        (self.dir / "stages").mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.dir / "demo_settings.json", json.dumps(self.settings_record(), indent=2))
        log_changes(self.dir, changes, "demo resume")
        finished = [st for st in STAGES if self.done(st) is not None]
        if finished:
            self.log(f"[demo] resuming {self.dir}: finished stages {', '.join(finished)}")
        if self.s.threads:
            import torch

            torch.set_num_threads(self.s.threads)
        summary: dict[str, Any] = {}
        t_all = time.time()
        for stage in STAGES:
            prior = self.done(stage)
            if prior is not None:
                self.log(f"[demo] {stage}: already done (resuming)")
                summary[stage] = prior
            else:
                self.log(f"[demo] {stage}: running")
                t0 = time.time()
                info = getattr(self, f"stage_{stage}")()
                info = {"skipped": True} if info is None else info
                info["stage_seconds"] = time.time() - t0
                summary[stage] = self.finish(stage, info)
                self.log(f"[demo] {stage}: done in {info['stage_seconds']:.0f}s")
            if stop_after == stage:
                break
        summary["wall_seconds_this_invocation"] = time.time() - t_all
        return summary


SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "demo_checkpoint"
"""The 5M SFT checkpoint shipped with diffucoder (``start_from="shipped"``; ``--quick`` starts from it)."""


def start_folder(start_from: str | None) -> Path | None:
    """The checkpoint folder a ``start_from`` setting names ("shipped": :data:`SHIPPED_CHECKPOINT`)."""
    if start_from is None:
        return None
    return SHIPPED_CHECKPOINT if start_from == "shipped" else Path(start_from)


def read_recipe(folder: str | Path) -> dict[str, Any]:
    """``demo_recipe.json`` of a checkpoint folder ({} when it has none); a broken file is an InputError."""
    from diffucoder.errors import InputError

    f = Path(folder) / "demo_recipe.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{f}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{f}: expected a JSON object")
    return data


def settings_for_start(settings: DemoSettings, log: Callable[[str], None] = print) -> DemoSettings:
    """``settings`` with the prompt format and system prompt of its ``start_from`` checkpoint's recipe (a model
    is evaluated and rewarded on the prompts it was trained on); a missing folder is an InputError."""
    from diffucoder.errors import InputError

    src = start_folder(settings.start_from)
    if src is None:
        return settings
    if not (src / "config.json").is_file():
        what = "the shipped demo checkpoint" if settings.start_from == "shipped" else "start_from"
        raise InputError(f"{what} {src}: no config.json there (not a checkpoint folder)")
    if not (src / "tokenizer.json").is_file():
        raise InputError(f"start_from {src}: no tokenizer.json there (the demo needs the model's tokenizer)")
    train = read_recipe(src).get("settings", {})
    changes = {k: train[k] for k in ("prompt_format", "system_prompt") if k in train and train[k] != getattr(settings, k)}
    if changes:
        log(f"[demo] start_from {settings.start_from}: using the checkpoint's "
            + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
    return replace(settings, **changes)


def pass_at_k_by_tier(per_task: dict[str, dict], tiers: dict[str, str], ks: tuple[int, ...]) -> dict[str, dict]:
    """Mean unbiased pass@k per tier from the harness's per-task counts (``n`` samples, ``c`` correct)."""
    from diffucoder.evaluation.metrics import pass_at_k

    out: dict[str, dict] = {}
    for tier in (*TIERS, "all"):
        ids = [t for t in per_task if tier == "all" or tiers.get(t) == tier]
        if not ids:
            continue
        row = {"tasks": len(ids)}
        for k in ks:
            vals = [pass_at_k(per_task[t]["n"], per_task[t]["base_correct"], k) for t in ids if per_task[t]["n"] >= k]
            row[f"pass@{k}"] = sum(vals) / len(vals) if vals else float("nan")
        out[tier] = row
    return out


def apply_overrides(settings: DemoSettings, pairs: list[str]) -> DemoSettings:
    """``["sft_steps=2400", "analysis_temperatures=0.2,1.0"]`` applied to ``settings``: values are read as YAML
    ("none" as None) and checked against the field's type by the training configs' checker; an unknown key or
    a value of the wrong type is a ValueError that names it."""
    import typing

    import difflib

    from diffucoder.errors import InputError
    from diffucoder.settings import SettingsError, check_value, parse_value

    hints = typing.get_type_hints(DemoSettings)
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = (part.strip() for part in pair.partition("="))
        if not sep:
            raise InputError(f"demo setting {pair!r}: expected KEY=VALUE (e.g. --set sft_steps=2400)")
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown demo setting {key!r}{hint}; valid: {', '.join(hints)}")
        try:
            changes[key] = check_value(None if text.lower() == "none" else parse_value(text), hints[key], key)
        except SettingsError as e:
            raise InputError(f"--set {key}={text}: {e}") from None
    return replace(settings, **changes)


def run_demo(run_dir: str | Path = "runs/demo", quick: bool = False, seed: int = 0, progress: bool = True,
             stop_after: str | None = None, allow_config_change: bool = False, **overrides: Any) -> dict[str, Any]:
    settings = settings_for_start(replace(QUICK if quick else FULL, **overrides))
    return Demo(run_dir, settings, seed=seed, progress=progress,
                allow_config_change=allow_config_change).run(stop_after=stop_after)


__all__ = ["Demo", "DemoSettings", "FULL", "QUICK", "SHIPPED_CHECKPOINT", "STAGES", "apply_overrides",
           "pass_at_k_by_tier", "read_recipe", "run_demo", "settings_for_start"]
