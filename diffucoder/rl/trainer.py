"""The coupled-GRPO trainer: ``train_grpo(config) -> GRPOResult`` (also ``diffucoder rl CONFIG.yaml``).

One optimizer step (TRL's accounting; DiffuCoder arXiv 2506.20639 section 5, reference.md section 5):

1. every ``num_iterations`` (mu) steps, a fresh rollout batch: ``per_device_train_batch_size / G`` prompts per
   rank, G diffusion decodes each at the rollout temperature; rewards ``sum_f w_f * r_f`` (default
   ``0.5 * code_format + 2.0 * code`` through the sandbox pool); group advantages (leave-one-out or mean,
   optional std scaling); one mask plan for the batch (the estimator, drawn from a per-batch generator) and,
   with ``beta > 0``, the reference model's log-likelihoods under that plan;
2. the update: the policy's estimated per-token log-likelihoods under the *same* masks; at the first of the mu
   iterations they are also the "old" log-probs (ratio 1), later iterations re-use them; clipped objective plus
   ``beta`` k3 KL, token-level normalised over the whole batch (all micro-batches and ranks); gradients
   all-reduced across ranks, clipped to ``max_grad_norm``; AdamW with linear warm-up and cosine decay;
3. every ``ref_model_sync_steps`` steps with ``sync_ref_model``: ``ref = a * theta + (1 - a) * ref``.

Bad input never loses the run: rows without tests are dropped at load (counted); a reward that raises scores 0
(counted); groups with equal rewards give zero advantages (counted as zero-variance groups); completions that
fill the canvas are counted (and excluded with ``mask_truncated_completions``); a non-finite loss or gradient
skips the update (counted; after ``max_nonfinite_steps`` in a row the run stops with its last good checkpoint).

Randomness: data order, rollouts and masks come from generators derived from ``(seed, rank, rollout index)``,
so a run resumed from a checkpoint (model, optimizer, scheduler, reference model, the current rollout batch and
counters, written atomically) continues exactly as the uninterrupted run would have.

Distributed: under ``torchrun`` each rank decodes and scores its own prompts. Replicated (default): gradients
are summed with ``all_reduce`` over a few flat buckets (:func:`all_reduce_bucketed`; gloo on CPU, nccl on GPU);
the model is not wrapped in DDP, since each rank runs several forward passes per backward, and a plain
all-reduce keeps that simple and exact. ``fsdp: true`` shards the policy and the reference model with FSDP2
(``fully_shard`` per transformer block, fp32 master weights cast to ``compute_dtype`` for compute, fp32 gradient
reduction): what a 7B run on 80 GB cards needs. Checkpoints then gather full state dicts on rank 0, so they load
with or without FSDP.

Memory (what a 7B policy needs): the log-prob passes run the LM head only at the positions that predict
completion tokens, chunked with recomputation (``diffusion.estimators.completion_token_logp``): no (rows, L, V)
logits and no fp32 log-softmax of them. Under FSDP that scorer is registered as a forward method of the sharded
model (``register_fsdp_forward_method``), so the root's parameters (embeddings, final norm, head) are gathered
around it as around ``forward``. A non-finite gradient is detected from the gradient norm (which the clipping
computes anyway: per-tensor norms, no copy of the gradients); a norm that overflows counts as non-finite.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffucoder.diffusion.estimators import LogpFn, MaskPlan, completion_token_logp, draw_mask_plan, estimate_logp
from diffucoder.rl.config import GRPOConfig, RLConfigError
from diffucoder.rl.loss import group_advantages, grpo_loss, zero_variance_groups
from diffucoder.rl.rollout import (
    DatasetStats,
    RewardFunc,
    RewardStats,
    Rollout,
    generate_rollouts,
    load_prompt_rows,
    resolve_reward_funcs,
    score_completions,
    validate_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model import DreamModel
    from diffucoder.tokenizer import DiffuTokenizer

STATE_NAME = "trainer_state.pt"
# Config keys that cannot change what a run computes (where and how fast it runs, what it logs, how often it
# saves): they may differ between the invocations of one run (see diffucoder.rundir).
RL_OPERATIONAL = ("resume_from_checkpoint", "overwrite_output_dir", "disable_tqdm", "logging_steps", "save_steps",
                  "save_total_limit", "reward_workers", "generation_batch_size", "logp_micro_batch_size", "device",
                  "max_nonfinite_steps", "save_final_model", "output_dir", "gradient_checkpointing")
# Keys a resumed run cannot take up even when a change is allowed (the saved rollout batch and the derived random
# streams depend on them).
RL_FIXED = ("seed", "num_generations", "per_device_train_batch_size")


@dataclass
class GRPOResult:
    """What :func:`train_grpo` returns."""

    output_dir: Path
    steps: int
    """Optimizer steps completed (including those of a resumed run)."""
    history: list[dict[str, Any]]
    """The logged records (also in ``output_dir/log.jsonl``)."""
    counters: dict[str, int]
    """Run totals: skipped rows, reward failures, zero-variance groups, truncated completions, skipped updates."""
    final_model_dir: Path | None = None
    last_checkpoint: Path | None = None
    stopped_early: str | None = None
    """Why the run stopped before ``max_steps`` (None when it completed)."""
    model: Any = None
    """The trained policy (in memory)."""


@dataclass
class _Batch:
    """One rollout batch and everything the mu updates re-use."""

    input_ids: torch.Tensor  # (N, L)
    attention_mask: torch.Tensor  # (N, L)
    completion_mask: torch.Tensor  # (N, Lc) loss mask
    advantages: torch.Tensor  # (N,)
    plan: MaskPlan
    ref_logp: torch.Tensor | None  # (N, Lc)
    old_logp: torch.Tensor | None = None  # (N, Lc), filled by the first update
    metrics: dict[str, float] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("input_ids", "attention_mask", "completion_mask", "advantages",
                                           "ref_logp", "old_logp", "metrics")}
        d["plan"] = asdict(self.plan)
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "_Batch":
        d = dict(d)
        d["plan"] = MaskPlan(**d["plan"])
        return cls(**d)


# ------------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------------
def derived_generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from ``(seed, *keys)`` (independent streams without touching global RNG)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(keys)).encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return g


def lr_factor(step: int, cfg: GRPOConfig) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up then the schedule."""
    warm = int(math.ceil(cfg.warmup_ratio * cfg.max_steps))
    if step < warm:
        return (step + 1) / warm
    if cfg.lr_scheduler_type == "constant":
        return 1.0
    progress = (step - warm) / max(1, cfg.max_steps - warm)
    cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    floor = cfg.min_lr_rate if cfg.lr_scheduler_type == "cosine_with_min_lr" else 0.0
    return floor + (1.0 - floor) * cos


class _Dist:
    """The process group (or a single-process stand-in)."""

    def __init__(self, device_kind: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
                self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            from diffucoder.training.distributed import cleanup

            cleanup()


GRAD_BUCKET_BYTES = 64 * 2 ** 20
"""Size of one flat buffer of the replicated gradient all-reduce."""


def all_reduce_bucketed(tensors: Sequence[torch.Tensor], reduce_: Callable[[torch.Tensor], Any],
                        bucket_bytes: int = GRAD_BUCKET_BYTES) -> int:
    """Reduce ``tensors`` in place through ``reduce_`` (e.g. a SUM all-reduce) on a few flat buffers.

    Tensors are packed in order into buffers of at most ``bucket_bytes`` (one tensor larger than that gets a
    buffer of its own) per dtype and device; each buffer is reduced with one call and copied back. Returns the
    number of calls. Summation is elementwise, so the result equals one call per tensor, bit for bit.
    """
    calls = 0
    bucket: list[torch.Tensor] = []
    size = 0

    def flush() -> None:
        nonlocal calls, bucket, size
        if not bucket:
            return
        if len(bucket) == 1:
            reduce_(bucket[0])
        else:
            flat = torch.cat([t.reshape(-1) for t in bucket])  # (n,)
            reduce_(flat)
            for t, v in zip(bucket, flat.split([t.numel() for t in bucket])):
                t.copy_(v.view_as(t))
        calls += 1
        bucket, size = [], 0

    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (t.dtype != bucket[0].dtype or t.device != bucket[0].device or size + nbytes > bucket_bytes):
            flush()
        bucket.append(t)
        size += nbytes
    flush()
    return calls


def _pick_device(cfg: GRPOConfig, dist: _Dist) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RLConfigError(f"device {cfg.device!r} requested but CUDA is not available")
    return torch.device("cuda", dist.local_rank)


def _checkpoints(output_dir: Path) -> list[Path]:
    cps = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and (p / STATE_NAME).is_file()]
    return sorted(cps, key=lambda p: int(p.name.split("-")[-1]))


# ------------------------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------------------------
class GRPOTrainer:
    """Holds the state of a run; :func:`train_grpo` is the entry point most callers want."""

    def __init__(self, cfg: GRPOConfig, model: "DreamModel | None" = None, tokenizer: "DiffuTokenizer | None" = None,
                 rows: Sequence[dict[str, Any]] | None = None,
                 reward_funcs: Sequence[str | RewardFunc] | None = None,
                 log_fn: Callable[[dict[str, Any]], None] | None = None, allow_config_change: bool = False) -> None:
        self.cfg = cfg
        self.dist = _Dist("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
        self.device = _pick_device(cfg, self.dist)
        self.out = Path(cfg.output_dir)
        self.log_fn = log_fn
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.torch_dtype]

        from diffucoder.model import DreamModel
        from diffucoder.tokenizer import load_tokenizer

        if model is None:
            if not cfg.model_name_or_path:
                raise RLConfigError("model_name_or_path is empty and no model was passed")
            model = DreamModel.from_pretrained(cfg.model_name_or_path, torch_dtype=dtype)
        if tokenizer is None:
            if not cfg.model_name_or_path:
                raise RLConfigError("no tokenizer: pass one or set model_name_or_path to a folder with tokenizer.json")
            tokenizer = load_tokenizer(cfg.model_name_or_path)
        self.tok = tokenizer
        if model.config.mask_token_id is not None and model.config.mask_token_id != tokenizer.mask_token_id:
            raise RLConfigError(f"model mask_token_id {model.config.mask_token_id} differs from the tokenizer's "
                                f"{tokenizer.mask_token_id}")
        # resume: weights (policy and reference) go into the plain modules before any sharding
        from diffucoder.rundir import check_changes, check_run_dir, config_changes, read_saved

        check_run_dir(self.out, "output_dir")
        self.resume_path = self._resume_path()
        self._config_changes: list = []
        if self.resume_path is not None:
            saved_file = self.resume_path / "rl_config.json"
            saved_cfg = read_saved(saved_file)
            if saved_cfg is not None:
                self._config_changes = config_changes(saved_cfg, cfg.to_dict(), RL_OPERATIONAL,
                                                      defaults=GRPOConfig().to_dict())
                check_changes(self._config_changes, self.out, saved_file, allow=allow_config_change,
                              what="GRPO run", fixed=RL_FIXED, error=RLConfigError)
        resume_state: dict[str, Any] | None = None
        if self.resume_path is not None:
            saved = DreamModel.from_pretrained(self.resume_path, torch_dtype=dtype)
            model.load_state_dict(saved.state_dict())
            del saved
            resume_state = torch.load(self.resume_path / STATE_NAME, map_location="cpu", weights_only=False)
        elif _checkpoints(self.out) and not cfg.overwrite_output_dir:
            raise RLConfigError(f"{self.out} already holds checkpoints; set resume_from_checkpoint=latest to continue "
                                f"or overwrite_output_dir=true to start over")
        self.model = model.to(device=self.device, dtype=dtype)
        self.model.model.gradient_checkpointing = cfg.gradient_checkpointing
        self.ref: DreamModel | None = None
        if cfg.beta != 0.0:
            self.ref = copy.deepcopy(self.model).eval()
            self.ref.requires_grad_(False)
            if resume_state is not None and resume_state.get("ref") is not None:
                self.ref.load_state_dict(resume_state["ref"])
        self.fsdp = bool(cfg.fsdp and self.dist.world > 1)
        self.compute_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                              "float16": torch.float16}[cfg.compute_dtype]
        if self.fsdp:
            self._shard(self.model)
            if self.ref is not None:
                self._shard(self.ref)

        # data
        self.data_stats = DatasetStats()
        if rows is None:
            if not cfg.dataset_path:
                raise RLConfigError("dataset_path is empty and no rows were passed")
            rows, self.data_stats = load_prompt_rows(cfg.dataset_path)
        else:
            rows, self.data_stats = validate_rows(rows)
        kept = []
        for r in rows:
            from diffucoder.rl.rollout import render_prompt

            text = render_prompt(r, tokenizer, cfg.system_prompt, cfg.chat_template, cfg.system_turn)
            n = len(tokenizer.encode(text))
            if n > cfg.max_prompt_length:
                self.data_stats.skipped_too_long += 1
            else:
                kept.append(r)
        self.data_stats.kept = len(kept)
        if not kept:
            from diffucoder.errors import DatasetError

            raise DatasetError(f"{cfg.dataset_path or 'rows'}: no usable prompt rows ({self.data_stats})")
        self.rows = kept

        self.reward_names = [n if isinstance(n, str) else getattr(n, "__name__", "reward")
                             for n in (reward_funcs or cfg.reward_funcs)]
        self._pool: Any = None
        self.rewards = resolve_reward_funcs(reward_funcs or cfg.reward_funcs, self._sandbox_pool, cfg.reward_timeout)
        if len(self.rewards) != len(cfg.reward_weights):
            raise RLConfigError(f"{len(self.rewards)} reward functions but {len(cfg.reward_weights)} reward_weights")
        self.reward_stats = [RewardStats() for _ in self.rewards]

        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self._resume_state = resume_state
        self.est_cfg = cfg.estimator_config()
        self.step = 0
        self.batch: _Batch | None = None
        self.counters: dict[str, int] = {
            "rows_skipped_no_tests": self.data_stats.skipped_no_tests,
            "rows_skipped_bad": self.data_stats.skipped_bad_row,
            "rows_skipped_too_long": self.data_stats.skipped_too_long,
            "reward_raised": 0, "reward_bad_values": 0, "groups": 0, "zero_variance_groups": 0,
            "completions": 0, "truncated_completions": 0, "nonfinite_skipped_steps": 0,
        }
        self.history: list[dict[str, Any]] = []
        self._nonfinite_run = 0

    def _shard(self, module: "DreamModel") -> None:
        """FSDP2: shard every transformer block, then the root (embeddings, final norm, head)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from diffucoder.model.modeling import DecoderLayer

        mp = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
        for m in module.modules():
            if isinstance(m, DecoderLayer):
                fully_shard(m, mp_policy=mp)
        fully_shard(module, mp_policy=mp)
        # the scorer reads the root's parameters (embeddings, final norm, head) outside ``forward``: make FSDP
        # gather them around it (and reduce their gradients) as it does around ``forward``
        from torch.distributed.fsdp import register_fsdp_forward_method

        module._grpo_completion_logp = types.MethodType(completion_token_logp, module)
        register_fsdp_forward_method(module, "_grpo_completion_logp")

    def _amp(self) -> Any:
        """Autocast to ``compute_dtype`` (without FSDP; FSDP casts through its mixed-precision policy)."""
        import contextlib

        if self.fsdp or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def _full_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole state dict (gathered on CPU under FSDP; a collective: every rank must call it)."""
        if not self.fsdp:
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _plain_model(self) -> "DreamModel | None":
        """An unsharded copy of the policy on rank 0 (the policy itself without FSDP); None on other ranks."""
        if not self.fsdp:
            return self.model
        from diffucoder.model import DreamConfig, DreamModel

        sd = self._full_state(self.model)
        if not self.dist.main:
            return None
        m = DreamModel(DreamConfig.from_dict(self.model.config.to_dict()), init_weights=False)
        m.load_state_dict(sd)
        return m

    def _optimizer_state(self) -> dict[str, Any]:
        if not self.fsdp:
            return self.opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.opt,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        if not self.fsdp:
            self.opt.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.opt, state, options=StateDictOptions(full_state_dict=True))

    def _sandbox_pool(self) -> Any:
        """This rank's sandbox pool for code rewards (created on first use, closed when training ends)."""
        if self._pool is None:
            from diffucoder.execution import SandboxPool

            self._pool = SandboxPool(workers=self.cfg.reward_workers)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- data ----------------------------------------------------------------------------------------------
    def _prompts_for(self, k: int) -> list[dict[str, Any]]:
        """The rows of rollout batch ``k`` for this rank: a fresh permutation per epoch, ranks interleaved."""
        n = self.cfg.per_device_train_batch_size // self.cfg.num_generations
        per_batch = n * self.dist.world
        out = []
        for j in range(n):
            gi = k * per_batch + self.dist.rank * n + j
            epoch, pos = divmod(gi, len(self.rows))
            perm = torch.randperm(len(self.rows), generator=derived_generator(self.cfg.seed, "data", epoch))
            out.append(self.rows[int(perm[pos])])
        return out

    # -- rollout batch -------------------------------------------------------------------------------------
    def _make_batch(self, k: int) -> _Batch:
        cfg = self.cfg
        rows = self._prompts_for(k)
        gen = derived_generator(cfg.seed, "rollout", self.dist.rank, k, device=self.device)
        with self._amp():
            ro: Rollout = generate_rollouts(
                self.model, self.tok, rows, cfg.num_generations, cfg.max_completion_length, cfg.diffusion_steps,
                cfg.temperature, cfg.top_p, cfg.generation_alg, gen, system_prompt=cfg.system_prompt,
                system_turn=cfg.system_turn,
                batch_size=cfg.generation_batch_size, chat_template=cfg.chat_template, **cfg.rollout_decoding(),
            )
        t0 = time.perf_counter()
        rewards, per_func = score_completions(ro.texts, ro.rows, self.rewards, cfg.reward_weights, self.reward_stats)
        reward_seconds = time.perf_counter() - t0
        adv = group_advantages(rewards, cfg.num_generations, cfg.advantage_baseline, cfg.scale_rewards)
        zv = zero_variance_groups(rewards, cfg.num_generations)
        cmask = ro.completion_mask.clone()
        if cfg.mask_truncated_completions:
            cmask[ro.truncated] = 0
        plan = draw_mask_plan(self.est_cfg, ro.prompt_mask, ro.completion_ids.shape[1],
                              generator=derived_generator(cfg.seed, "mask", self.dist.rank, k))
        batch = _Batch(input_ids=ro.input_ids, attention_mask=ro.attention_mask, completion_mask=cmask,
                       advantages=adv, plan=plan, ref_logp=None)
        if self.ref is not None:
            mb = self._rows_per_forward()
            with torch.no_grad():
                batch.ref_logp = torch.cat([self._logp(self.ref, batch, slice(s, s + mb)).float().cpu()
                                            for s in range(0, batch.input_ids.shape[0], mb)])
        # local sums, reduced across ranks when logged
        N = rewards.numel()
        m = {
            "n": float(N), "reward_sum": float(rewards.sum()), "reward_sq": float((rewards ** 2).sum()),
            "groups": float(zv.numel()), "zero_var_groups": float(zv.sum()),
            "truncated": float(ro.truncated.sum()), "length_sum": float(ro.completion_mask.sum()),
            "rollout_tokens": float(N * ro.completion_ids.shape[1]), "rollout_seconds": ro.seconds,
            "reward_seconds": reward_seconds,
        }
        for j, name in enumerate(self.reward_names):
            m[f"reward_sum/{name}"] = float(per_func[:, j].sum())
        batch.metrics = m
        self.counters["groups"] += int(zv.numel())
        self.counters["zero_variance_groups"] += int(zv.sum())
        self.counters["completions"] += N
        self.counters["truncated_completions"] += int(ro.truncated.sum())
        self.counters["reward_raised"] = sum(s.raised for s in self.reward_stats)
        self.counters["reward_bad_values"] = sum(s.bad_values for s in self.reward_stats)
        self._last_texts = ro.texts
        return batch

    def _rows_per_forward(self) -> int:
        mb = self.cfg.logp_micro_batch_size
        return max(1, int(mb)) if mb else self.cfg.per_device_train_batch_size

    def _logp(self, model: "DreamModel", batch: _Batch, rows: slice | None = None) -> torch.Tensor:
        rows = rows if rows is not None else slice(None)
        with self._amp():
            est = estimate_logp(model, batch.input_ids[rows].to(self.device), batch.attention_mask[rows].to(self.device),
                                batch.plan.select(rows).to(self.device), self.tok.mask_token_id,
                                logp_fn=self._scorer(model))
        return est.logp

    @staticmethod
    def _scorer(model: "DreamModel") -> LogpFn | None:
        """The FSDP-registered scorer of a sharded model (see ``_shard``), else None (the plain function)."""
        return getattr(model, "_grpo_completion_logp", None)

    # -- one optimizer step --------------------------------------------------------------------------------
    def _update(self, batch: _Batch, iteration: int) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        N = batch.input_ids.shape[0]
        local_tokens = batch.completion_mask.sum().float()
        total_tokens = float(self.dist.sum_(local_tokens.clone().to(self.device)).clamp_min(1.0))
        sums = {"loss": 0.0, "kl": 0.0, "clipped": 0.0, "ratio": 0.0, "tokens": 0.0, "kl_clamped": 0.0}
        finite = True
        first = iteration == 0 or batch.old_logp is None
        old_store = torch.zeros(batch.completion_mask.shape, dtype=torch.float32) if first else batch.old_logp
        mb = self._rows_per_forward()
        t0 = time.perf_counter()
        for s in range(0, N, mb):
            rows = slice(s, min(N, s + mb))
            logp = self._logp(self.model, batch, rows)  # (n, Lc)
            if first:
                old = logp.detach()
                old_store[rows] = old.float().cpu()
            else:
                old = batch.old_logp[rows].to(self.device)
            ref = batch.ref_logp[rows].to(self.device) if batch.ref_logp is not None else None
            out = grpo_loss(logp, old, batch.advantages[rows].to(self.device),
                            batch.completion_mask[rows].to(self.device), ref_logp=ref, beta=cfg.beta,
                            epsilon_low=cfg.epsilon, epsilon_high=cfg.epsilon_high, normalizer=total_tokens,
                            kl_clamp=cfg.kl_clamp)
            if not torch.isfinite(out.loss):
                finite = False  # still run backward: every rank must take part in the same collectives;
                # the step is skipped below on all ranks together
            # FSDP averages gradients over ranks; the loss is already divided by the global token count
            (out.loss * (self.dist.world if self.fsdp else 1)).backward()
            sums["loss"] += float(out.loss.detach())
            sums["kl"] += out.kl_sum
            sums["clipped"] += out.clipped_tokens
            sums["ratio"] += out.ratio_sum
            sums["tokens"] += out.num_tokens
            sums["kl_clamped"] += out.kl_clamped_tokens
        if first:
            batch.old_logp = old_store
        # a non-finite loss on any rank skips the step on all ranks (one scalar collective)
        flag = self.dist.sum_(torch.tensor([0.0 if finite else 1.0], device=self.device))
        grad_norm = math.nan
        if float(flag) == 0.0:
            grad_norm = self._finish_gradients()
        if math.isfinite(grad_norm):
            self.opt.step()
            self._nonfinite_run = 0
        else:
            self.counters["nonfinite_skipped_steps"] += 1
            self._nonfinite_run += 1
        self.opt.zero_grad(set_to_none=True)
        lr = self.sched.get_last_lr()[0]
        with warnings.catch_warnings():  # a skipped update still advances the schedule
            warnings.simplefilter("ignore", UserWarning)
            self.sched.step()
        seconds = time.perf_counter() - t0
        P = batch.plan.num_passes
        return {**sums, "lr": lr, "grad_norm": grad_norm, "skipped": float(not math.isfinite(grad_norm)),
                "update_seconds": seconds,
                "update_tokens": float(N * P * batch.input_ids.shape[1])}

    def _finish_gradients(self) -> float:
        """Sum gradients over ranks (bucketed; FSDP has reduce-scattered them already), clip them to
        ``max_grad_norm``; return the pre-clip norm, non-finite when a gradient is (the same on every rank)."""
        if self.dist.world > 1 and not self.fsdp:
            # each rank's loss is already divided by the global token count: the sum is the batch gradient
            all_reduce_bucketed([p.grad for p in self.model.parameters() if p.grad is not None], self.dist.sum_)
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        return float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)

    @torch.no_grad()
    def _sync_ref(self) -> None:
        a = self.cfg.ref_model_mixup_alpha
        for pr, pm in zip(self.ref.parameters(), self.model.parameters()):
            pr.mul_(1.0 - a).add_(pm.detach().to(pr.dtype), alpha=a)

    # -- logs ----------------------------------------------------------------------------------------------
    def _record(self, batch: _Batch, upd: dict[str, float], iteration: int) -> dict[str, Any]:
        keys = sorted(batch.metrics)
        vec = torch.tensor([batch.metrics[k] for k in keys] + [upd["kl"], upd["clipped"], upd["ratio"],
                                                                upd["tokens"], upd["update_tokens"], upd["loss"],
                                                                upd["kl_clamped"]],
                           dtype=torch.float64)
        vec = self.dist.sum_(vec.to(self.device)).cpu()
        m = dict(zip(keys, vec[:len(keys)].tolist()))
        kl, clipped, ratio, tokens, utok, loss, kl_clamped = vec[len(keys):].tolist()
        n = max(m["n"], 1.0)
        mean = m["reward_sum"] / n
        rec: dict[str, Any] = {
            "step": self.step, "rollout_batch": self.step // self.cfg.num_iterations, "iteration": iteration,
            "lr": upd["lr"], "loss": loss if math.isfinite(loss) else None,
            "reward_mean": mean, "reward_std": math.sqrt(max(0.0, m["reward_sq"] / n - mean ** 2)),
            "zero_variance_frac": m["zero_var_groups"] / max(m["groups"], 1.0),
            "clip_frac": clipped / max(tokens, 1.0), "kl": kl / max(tokens, 1.0) if self.ref is not None else 0.0,
            "kl_clamped_frac": kl_clamped / max(tokens, 1.0) if self.cfg.kl_clamp is not None else None,
            "ratio_mean": ratio / max(tokens, 1.0),
            "completion_length": m["length_sum"] / n, "truncated_frac": m["truncated"] / n,
            "rollout_tok_s": m["rollout_tokens"] / max(m["rollout_seconds"] / self.dist.world, 1e-9)
            if iteration == 0 else None,
            "update_tok_s": utok / max(upd["update_seconds"], 1e-9),
            "update_seconds": upd["update_seconds"],
            "rollout_seconds": m["rollout_seconds"] / self.dist.world if iteration == 0 else None,
            "reward_seconds": m["reward_seconds"] / self.dist.world if iteration == 0 else None,
            "grad_norm": upd["grad_norm"] if math.isfinite(upd["grad_norm"]) else None,
            "skipped_update": bool(upd["skipped"]),
        }
        for k in keys:
            if k.startswith("reward_sum/"):
                rec["reward/" + k.split("/", 1)[1]] = m[k] / n
        rec["counters"] = dict(self.counters)
        rec["reward_errors"] = {name: {"raised": s.raised, "bad_values": s.bad_values}
                                for name, s in zip(self.reward_names, self.reward_stats)}
        return rec

    # -- checkpoints ---------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        from diffucoder.model import atomic_directory
        from diffucoder.model.checkpoint import write_pretrained

        path = self.out / f"checkpoint-{self.step}"
        plain = self._plain_model()  # collectives first, on every rank
        ref_state = self._full_state(self.ref) if self.ref is not None else None
        opt_state = self._optimizer_state()
        if self.dist.main:
            with atomic_directory(path) as tmp:
                write_pretrained(plain, tmp, tokenizer=self.tok)
                state = {
                    "step": self.step, "optimizer": opt_state, "scheduler": self.sched.state_dict(),
                    "ref": ref_state,
                    "counters": self.counters, "history_len": len(self.history),
                    "reward_stats": [asdict(s) for s in self.reward_stats],
                    "nonfinite_run": self._nonfinite_run, "config": self.cfg.to_dict(),
                }
                torch.save(state, tmp / STATE_NAME)
                if self.batch is not None:
                    torch.save(self.batch.state(), tmp / "rollout_rank0.pt")
                (tmp / "rl_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2, default=str) + "\n")
            if self.cfg.save_total_limit:
                for old in _checkpoints(self.out)[:-self.cfg.save_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        # every rank keeps its own rollout batch (it scored its own prompts); rank 0's is inside the atomic unit
        self.dist.barrier()
        if self.batch is not None and not self.dist.main:
            torch.save(self.batch.state(), path / f"rollout_rank{self.dist.rank}.pt")
        self.dist.barrier()
        return path

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        """Optimizer, scheduler, counters, the current rollout batch and the log of a checkpoint (the weights were
        loaded before sharding, in ``__init__``)."""
        self._load_optimizer_state(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.counters.update(state["counters"])
        self.reward_stats = [RewardStats(**s) for s in state["reward_stats"]]
        self._nonfinite_run = int(state.get("nonfinite_run", 0))
        rb = path / f"rollout_rank{self.dist.rank}.pt"
        self.batch = _Batch.from_state(torch.load(rb, map_location="cpu", weights_only=False)) if rb.is_file() else None
        log = self.out / "log.jsonl"
        if log.is_file():
            recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            self.history = [r for r in recs if r["step"] <= self.step]
            if self.dist.main:
                log.write_text("".join(json.dumps(r) + "\n" for r in self.history))

    def _resume_path(self) -> Path | None:
        r = self.cfg.resume_from_checkpoint
        if r in (None, False, ""):
            return None
        if r is True or r == "latest":
            cps = _checkpoints(self.out)
            return cps[-1] if cps else None
        p = Path(str(r))
        if not (p / STATE_NAME).is_file():
            raise RLConfigError(f"resume_from_checkpoint: {p} is not a GRPO checkpoint (no {STATE_NAME})",
                                ["resume_from_checkpoint"])
        return p

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self) -> GRPOResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        resume = self.resume_path
        if resume is not None and self._resume_state is not None:
            self._restore(resume, self._resume_state)
            self._resume_state = None
            if self.dist.main:
                from diffucoder.rundir import log_changes, note

                log_changes(self.out, self._config_changes, f"resume from {resume}")
                note(f"resuming from step {self.step} of {cfg.max_steps} ({resume})" if self.step < cfg.max_steps
                     else f"{self.out}: already at step {self.step} of {cfg.max_steps} ({resume}); nothing left to "
                          f"train")
        self.dist.barrier()
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if resume is None:
                (self.out / "log.jsonl").write_text("")
        self.dist.barrier()
        stopped: str | None = None
        last_cp: Path | None = resume
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"grpo[{cfg.estimator}]",
                   disable=cfg.disable_tqdm or not self.dist.main, file=sys.stderr, dynamic_ncols=True)
        try:
            while self.step < cfg.max_steps:
                it = self.step % cfg.num_iterations
                if it == 0 or self.batch is None:
                    self.batch = self._make_batch(self.step // cfg.num_iterations)
                upd = self._update(self.batch, it)
                rec = self._record(self.batch, upd, it)
                self.step += 1
                rec["step"] = self.step
                if self.ref is not None and cfg.sync_ref_model and self.step % cfg.ref_model_sync_steps == 0:
                    self._sync_ref()
                    rec["ref_synced"] = True
                self.history.append(rec)
                if self.dist.main:
                    if self.step % cfg.logging_steps == 0 or self.step == cfg.max_steps:
                        with (self.out / "log.jsonl").open("a") as fh:
                            fh.write(json.dumps(rec) + "\n")
                    if self.log_fn is not None:
                        self.log_fn(rec)
                bar.update(1)
                bar.set_postfix(reward=f"{rec['reward_mean']:.3f}", kl=f"{rec['kl']:.4f}",
                                zv=f"{rec['zero_variance_frac']:.2f}")
                if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < cfg.max_steps:
                    last_cp = self.save_checkpoint()
                if self._nonfinite_run >= cfg.max_nonfinite_steps:
                    stopped = f"{self._nonfinite_run} consecutive non-finite updates"
                    break
        finally:
            bar.close()
            self.close()
        if stopped is None:
            last_cp = self.save_checkpoint()
        final = None
        plain = self._plain_model() if cfg.save_final_model and stopped is None else None
        if plain is not None and self.dist.main:
            final = plain.save_pretrained(self.out / "final", tokenizer=self.tok)
        self.dist.barrier()
        self.dist.close()
        return GRPOResult(output_dir=self.out, steps=self.step, history=self.history, counters=dict(self.counters),
                          final_model_dir=final, last_checkpoint=last_cp, stopped_early=stopped,
                          model=plain if plain is not None else self.model)


def train_grpo(config: GRPOConfig | dict[str, Any] | str | Path, model: "DreamModel | None" = None,
               tokenizer: "DiffuTokenizer | None" = None, rows: Sequence[dict[str, Any]] | None = None,
               reward_funcs: Sequence[str | RewardFunc] | None = None,
               log_fn: Callable[[dict[str, Any]], None] | None = None,
               allow_config_change: bool = False) -> GRPOResult:
    """Run coupled-GRPO (see the module docstring).

    ``config``: a :class:`GRPOConfig`, a dict of its fields or a YAML path. ``model`` / ``tokenizer`` / ``rows``
    (dicts with ``question`` and ``test_cases``) / ``reward_funcs`` (names or callables) override what the
    config would load, which is how the demo and the tests call it. ``log_fn`` receives every logged record.
    Resuming (``resume_from_checkpoint``) under a config that differs from the checkpoint's outside
    ``RL_OPERATIONAL`` is refused with the changed keys named, unless ``allow_config_change``.
    """
    if isinstance(config, (str, Path)):
        config = GRPOConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = GRPOConfig.from_dict(config)
    trainer = GRPOTrainer(config, model=model, tokenizer=tokenizer, rows=rows, reward_funcs=reward_funcs,
                          log_fn=log_fn, allow_config_change=allow_config_change)
    return trainer.train()
