"""``GRPOConfig``: the configuration of a coupled-GRPO run, loaded from YAML with ``key=value`` overrides.

Names follow TRL's ``GRPOConfig`` where they overlap (``num_generations``, ``beta``, ``epsilon``,
``num_iterations``, ``max_completion_length``, ``temperature``, ``learning_rate``, ``sync_ref_model``...);
the diffusion-specific fields (``estimator``, ``diffusion_steps``...) follow DiffuCoder's recipe. Defaults are
DiffuCoder's released hyper-parameters except where a CPU run needs something else (noted per field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffucoder.diffusion.estimators import ESTIMATORS, EstimatorConfig
from diffucoder.settings import SettingsError, apply_overrides, from_dict, load_settings


class RLConfigError(SettingsError):
    """A config value that cannot describe a GRPO run (``keys``: the keys involved)."""


@dataclass
class GRPOConfig:
    """All knobs of :func:`diffucoder.rl.train_grpo`."""

    # -- model and data ----------------------------------------------------------------------------------
    model_name_or_path: str = ""
    """Checkpoint folder (Dream layout, with tokenizer.json) of the policy to train (e.g. the SFT model)."""
    dataset_path: str = ""
    """jsonl with one prompt per line (``diffucoder.tasks.to_rl_record`` rows): ``prompt`` (the user message) or
    ``question``, and ``test_cases`` (list of assert strings). Rows without tests are skipped and counted."""
    chat_template: bool = True
    """Wrap the user message in the tokenizer's chat template (False: use it verbatim as the prompt)."""
    output_dir: str = "runs/rl"
    """Logs (``log.jsonl``), checkpoints (``checkpoint-N``) and the final model (``final``)."""
    system_prompt: str | None = None
    """System turn of the chat template (None: the tokenizer's default)."""
    system_turn: bool = True
    """Add the system turn at all (False: none, for a model trained without one, e.g. ``sft.system_prompt: null``)."""
    max_prompt_length: int = 512
    """Prompts longer than this (in tokens) are skipped and counted."""
    torch_dtype: str = "float32"
    """Dtype the policy is trained in ("float32", "bfloat16")."""
    compute_dtype: str = "float32"
    """Dtype of the forward/backward compute: "bfloat16" autocasts (or, with ``fsdp``, casts the sharded fp32
    master weights) while the optimizer keeps ``torch_dtype`` weights. Keep ``torch_dtype`` float32 at small
    learning rates: a 1e-6 step is below bfloat16's resolution for most weights."""
    fsdp: bool = False
    """Under torchrun, shard parameters, gradients and optimizer state with FSDP2 (ignored on one process)."""
    device: str = "auto"
    """"auto" (cuda:LOCAL_RANK when available, else cpu), "cpu" or "cuda"."""

    # -- GRPO ----------------------------------------------------------------------------------------------
    num_generations: int = 10
    """G: completions per prompt (>= 2)."""
    per_device_train_batch_size: int = 10
    """Completions per rank per optimizer step (a multiple of G: each rank holds whole groups and scores its
    own rollouts)."""
    max_steps: int = 100
    """Optimizer steps, as in TRL: a fresh rollout batch every ``num_iterations`` steps, each step one update
    on it."""
    num_iterations: int = 2
    """mu: updates per rollout batch, re-using the same masks (DiffuCoder: 2)."""
    beta: float = 0.01
    """Weight of the k3 KL to the reference model (0 disables the reference model)."""
    kl_clamp: float | None = None
    """Upper bound of the per-token k3 KL term (None: unclamped, DiffuCoder's loss). Not in the paper: a token
    whose estimate moved far from the reference's then adds a constant and no gradient (see rl.loss)."""
    epsilon: float = 0.5
    """Clipping range of the ratio (DiffuCoder: 0.5)."""
    epsilon_high: float | None = None
    """Upper clipping range (None: ``epsilon``)."""
    advantage_baseline: str = "loo"
    """"loo" (leave-one-out, DiffuCoder) or "mean" (TRL's)."""
    scale_rewards: bool = False
    """Divide advantages by the group's reward std (TRL default True; DiffuCoder: False)."""
    mask_truncated_completions: bool = False
    """Exclude completions that filled the canvas without a stop token from the loss."""
    sync_ref_model: bool = True
    """Mix the policy into the reference model every ``ref_model_sync_steps`` steps."""
    ref_model_mixup_alpha: float = 0.6
    """ref = alpha * theta + (1 - alpha) * ref."""
    ref_model_sync_steps: int = 64
    """Steps between reference syncs."""

    # -- rewards -----------------------------------------------------------------------------------------
    reward_funcs: list[str] = field(default_factory=lambda: ["code_format", "code"])
    """TRL-signature rewards: names in ``diffucoder.rewards`` (``code_format``, ``code``) or
    ``"package.module:function"``."""
    reward_weights: list[float] = field(default_factory=lambda: [0.5, 2.0])
    """Weights of ``reward_funcs`` (DiffuCoder: 0.5 format, 2.0 code)."""
    reward_workers: int = 2
    """Sandbox pool size for the code reward."""
    reward_timeout: float = 5.0
    """Seconds per test program."""

    # -- rollout (diffusion decoding) --------------------------------------------------------------------
    max_completion_length: int = 256
    """Canvas length (DiffuCoder 256)."""
    diffusion_steps: int = 256
    """Decoding steps (DiffuCoder: as many as tokens)."""
    temperature: float = 1.2
    """Rollout temperature (paper 1.2; the released yaml 1.0)."""
    top_p: float = 0.95
    """Nucleus sampling at rollout."""
    generation_alg: str = "entropy"
    """Unmasking order of ``diffusion_generate``."""
    generation_batch_size: int | None = None
    """Rows decoded at once (None: the whole per-device batch)."""
    top_k: int | None = 50
    """Top-k filter at rollout. 50 is what the released trainer's rollouts use without saying so (Dream's
    ``diffusion_generate`` inherits it from a transformers-4.x model config); None or 0: off."""
    generation_block_length: int | None = None
    """Semi-AR decoding blocks of this many tokens (None: one block, the reference's decoding)."""
    generation_threshold: float | None = None
    """Fast-dLLM parallel decoding: reveal every token above this probability (``diffusion_steps`` then unused)."""
    generation_use_cache: str | None = None
    """KV cache while decoding: "prefix", "dual" or None (needs ``generation_block_length`` to pay off)."""
    generation_early_stop: bool = False
    """Stop decoding a row once its answer has ended (the completion and its text are unchanged; the canvas after
    the stop token becomes pad)."""

    # -- estimator ---------------------------------------------------------------------------------------
    estimator: str = "coupled"
    """Log-likelihood estimator: coupled (DiffuCoder's, 1/t weights), decoupled, full_mask, d1, or
    coupled_normalized (coupled's complementary masks with weight 1: each token's estimate is one conditional
    log-probability, so log-ratios, the clip band and the k3 KL are on the scale of full_mask / d1; not in the
    paper). See diffucoder.diffusion.estimators."""
    num_mask_pairs: int = 1
    """lambda: complementary pairs per estimate (decoupled: lambda pairs of independent masks)."""
    full_mask_pass: bool = True
    """Add the fully-masked pass (coupled / decoupled / coupled_normalized)."""
    t_min: float = 0.2
    """Mask ratios t ~ U(t_min, t_max)."""
    t_max: float = 0.8
    prompt_mask_prob: float = 0.15
    """d1: prompt masking probability."""
    estimator_passes: int | None = None
    """d1: draws averaged (default 1)."""
    logp_micro_batch_size: int | None = None
    """Sequences per forward/backward of the log-prob passes (each sequence is forwarded once per estimator
    pass); None: the whole per-device batch at once. Gradients accumulate exactly over micro-batches."""

    # -- optimisation ------------------------------------------------------------------------------------
    learning_rate: float = 1e-6
    """Peak learning rate (0: a control run that decodes, scores and computes every update but never moves the
    weights)."""
    lr_scheduler_type: str = "cosine_with_min_lr"
    """"cosine_with_min_lr" (to ``min_lr_rate`` x peak), "cosine" (to 0) or "constant"; linear warm-up first."""
    min_lr_rate: float = 0.1
    """Final lr / peak for cosine_with_min_lr."""
    warmup_ratio: float = 0.0
    """Fraction of ``max_steps`` spent warming up linearly."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    weight_decay: float = 0.1
    max_grad_norm: float = 0.2
    """Gradient-norm clipping (DiffuCoder: 0.2)."""
    gradient_checkpointing: bool = False

    # -- bookkeeping -------------------------------------------------------------------------------------
    seed: int = 42
    """Seeds data order, rollouts and masks (through explicit generators)."""
    logging_steps: int = 1
    save_steps: int = 50
    """Checkpoint every N steps (0: only at the end)."""
    save_total_limit: int | None = 2
    """Keep the newest N checkpoints."""
    resume_from_checkpoint: str | bool | None = None
    """A checkpoint folder, True/"latest" for the newest under ``output_dir``, or None (fresh run; refuses to
    overwrite existing checkpoints unless ``overwrite_output_dir``)."""
    overwrite_output_dir: bool = False
    save_final_model: bool = True
    """Write ``output_dir/final`` (HF layout with tokenizer) at the end."""
    disable_tqdm: bool = False
    max_nonfinite_steps: int = 20
    """Abort (with a checkpoint of the last good state) after this many consecutive non-finite updates."""

    def __post_init__(self) -> None:
        self.validate()

    def estimator_config(self) -> EstimatorConfig:
        return EstimatorConfig(name=self.estimator, num_pairs=self.num_mask_pairs,
                               full_mask_pass=self.full_mask_pass, t_min=self.t_min, t_max=self.t_max,
                               prompt_mask_prob=self.prompt_mask_prob, num_passes=self.estimator_passes)

    def rollout_decoding(self) -> dict[str, Any]:
        """The rollout's ``diffusion_generate`` options beyond steps / temperature / top-p / alg."""
        return {"top_k": self.top_k, "block_length": self.generation_block_length,
                "threshold": self.generation_threshold, "use_cache": self.generation_use_cache,
                "early_stop": self.generation_early_stop}

    def validate(self) -> None:
        def need(cond: bool, msg: str, *keys: str) -> None:
            if not cond:
                raise RLConfigError(msg, keys)

        need(self.num_generations >= 2, f"num_generations must be >= 2, got {self.num_generations}", "num_generations")
        need(self.per_device_train_batch_size >= self.num_generations
             and self.per_device_train_batch_size % self.num_generations == 0,
             f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a positive multiple of "
             f"num_generations ({self.num_generations}) so that each rank holds whole groups",
             "per_device_train_batch_size", "num_generations")
        need(self.num_iterations >= 1, f"num_iterations must be >= 1, got {self.num_iterations}", "num_iterations")
        need(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}", "max_steps")
        need(self.beta >= 0, f"beta must be >= 0, got {self.beta}", "beta")
        need(self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}", "epsilon")
        need(self.epsilon_high is None or self.epsilon_high > 0, f"epsilon_high must be > 0, got {self.epsilon_high}",
             "epsilon_high")
        need(self.advantage_baseline in ("loo", "mean"),
             f"advantage_baseline must be 'loo' or 'mean', got {self.advantage_baseline!r}", "advantage_baseline")
        need(0.0 <= self.ref_model_mixup_alpha <= 1.0,
             f"ref_model_mixup_alpha must be in [0, 1], got {self.ref_model_mixup_alpha}", "ref_model_mixup_alpha")
        need(self.ref_model_sync_steps >= 1, f"ref_model_sync_steps must be >= 1, got {self.ref_model_sync_steps}",
             "ref_model_sync_steps")
        need(len(self.reward_funcs) == len(self.reward_weights) and len(self.reward_funcs) > 0,
             f"reward_funcs {self.reward_funcs} and reward_weights {self.reward_weights} must be non-empty lists "
             f"of the same length", "reward_funcs", "reward_weights")
        need(self.reward_workers >= 1, f"reward_workers must be >= 1, got {self.reward_workers}", "reward_workers")
        need(self.reward_timeout > 0, f"reward_timeout must be > 0, got {self.reward_timeout}", "reward_timeout")
        need(self.max_completion_length >= 1, f"max_completion_length must be >= 1, got "
             f"{self.max_completion_length}", "max_completion_length")
        need(self.diffusion_steps >= 1, f"diffusion_steps must be >= 1, got {self.diffusion_steps}",
             "diffusion_steps")
        need(self.max_prompt_length >= 1, f"max_prompt_length must be >= 1, got {self.max_prompt_length}",
             "max_prompt_length")
        need(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}", "temperature")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        need(self.top_k is None or (isinstance(self.top_k, int) and self.top_k >= 0),
             f"top_k must be None or an integer >= 0, got {self.top_k!r}", "top_k")
        need(self.generation_block_length is None or self.generation_block_length >= 1,
             f"generation_block_length must be None or >= 1, got {self.generation_block_length}",
             "generation_block_length")
        need(self.generation_threshold is None or 0 < self.generation_threshold <= 1,
             f"generation_threshold must be None or in (0, 1], got {self.generation_threshold}",
             "generation_threshold")
        need(self.generation_use_cache in (None, "prefix", "dual"),
             f"generation_use_cache must be None, prefix or dual, got {self.generation_use_cache!r}",
             "generation_use_cache")
        need(self.learning_rate >= 0, f"learning_rate must be >= 0, got {self.learning_rate}", "learning_rate")
        need(self.kl_clamp is None or self.kl_clamp > 0, f"kl_clamp must be > 0 (or null), got {self.kl_clamp}",
             "kl_clamp")
        need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}", "max_grad_norm")
        need(self.estimator in ESTIMATORS, f"estimator must be one of {list(ESTIMATORS)}, got {self.estimator!r}",
             "estimator")
        need(self.lr_scheduler_type in ("cosine_with_min_lr", "cosine", "constant"),
             f"lr_scheduler_type must be cosine_with_min_lr, cosine or constant, got {self.lr_scheduler_type!r}",
             "lr_scheduler_type")
        need(0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
             "warmup_ratio")
        need(self.logging_steps >= 1, f"logging_steps must be >= 1, got {self.logging_steps}", "logging_steps")
        need(self.save_steps >= 0, f"save_steps must be >= 0 (0: only at the end), got {self.save_steps}",
             "save_steps")
        need(self.save_total_limit is None or self.save_total_limit >= 1,
             f"save_total_limit must be >= 1 (or null: keep all), got {self.save_total_limit}", "save_total_limit")
        for name in ("generation_batch_size", "logp_micro_batch_size", "estimator_passes"):
            v = getattr(self, name)
            need(v is None or v >= 1, f"{name} must be >= 1 (or null), got {v}", name)
        for name in ("torch_dtype", "compute_dtype"):
            need(getattr(self, name) in ("float32", "bfloat16", "float16"),
                 f"{name} must be float32, bfloat16 or float16, got {getattr(self, name)!r}", name)
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda, got {self.device!r}", "device")
        try:
            self.estimator_config()
        except ValueError as e:
            raise RLConfigError(str(e), ("estimator",)) from None

    # -- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> "GRPOConfig":
        """A config from a mapping of its fields: values checked against the field types, unknown keys refused
        (with the closest valid one); ``source`` names where the mapping came from in errors."""
        try:
            return from_dict(cls, dict(d), "", RLConfigError)
        except RLConfigError as e:
            raise RLConfigError(f"{source}: {e}" if source else str(e), e.keys) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "GRPOConfig":
        """Load a YAML mapping (safe loader; nothing is executed) and apply ``key=value`` overrides; errors say
        whether the file or an override holds the bad value."""
        return load_settings(cls, path, overrides or [], error=RLConfigError)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["beta=0", "reward_weights=[1, 2]"]`` -> ``{"beta": 0, "reward_weights": [1, 2]}`` (YAML values)."""
    return apply_overrides({}, items, RLConfigError)
