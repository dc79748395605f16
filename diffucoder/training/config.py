"""Typed training configuration: dataclasses with a docstring per field, loaded from YAML with overrides.

A YAML file mirrors :class:`TrainConfig` (sections ``model``, ``tokenizer``, ``data``, ``sft``, ``diffusion``,
``optim``, ``eval``, ``checkpoint``, ``logging``, ``runtime``). Unknown keys are rejected with the list of valid
ones; values are checked against the field types (and ``Literal`` choices). Command-line overrides use dotted
keys with YAML values: ``optim.lr=1e-3 data.corpus=[stdlib,extra.txt] runtime.precision=bf16``.

    cfg = load_config("configs/pretrain_tiny_cpu.yaml", ["optim.steps=10"])
    cfg.to_dict()  # the resolved config, saved as RUN/config.yaml

Config files under ``configs/`` carry a top-level ``kind`` (``train`` here; ``rl`` for coupled-GRPO configs),
which ``tests/test_configs.py`` uses to pick the loader.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from diffucoder.settings import (SettingsError, apply_overrides, check_value, field_docs, from_dict, load_settings,
                                 parse_value)

__all__ = ["ConfigError", "TrainConfig", "apply_overrides", "check_value", "dump_config", "field_docs", "from_dict",
           "load_config", "parse_value"]


class ConfigError(SettingsError):
    """A config that does not describe a valid training run (``keys``: the dotted keys involved)."""


@dataclass
class ModelSection:
    """What model to train."""

    preset: str = "tiny"
    """Shape of a model trained from scratch: "tiny" (tests), "4m", "5m", "20m" (DreamConfig.preset); ignored with
    ``init_from``."""
    init_from: str | None = None
    """Folder to start from: a Dream/DiffuCoder checkpoint (continued training, SFT) or a Qwen2 causal-LM
    checkpoint (AR adaptation; the [MASK] id comes from the tokenizer)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """DreamConfig fields overriding the preset, e.g. ``{num_hidden_layers: 4, rope_theta: 1e6}``."""
    shift_logits: bool = True
    """For a model from scratch: keep Dream's AR shift (output i predicts token i+1), so checkpoints behave
    exactly like Dream's. A model from ``init_from`` keeps the folder's setting."""
    gradient_checkpointing: bool = False
    """Recompute each block in the backward pass (less memory, ~30% more compute)."""


@dataclass
class TokenizerSection:
    """Which tokenizer to use."""

    path: str | None = None
    """tokenizer.json, or a folder holding one. None: the ``model.init_from`` folder's, else a byte-level BPE
    trained on the training texts."""
    vocab_size: int = 8192
    """Vocabulary of the BPE trained when no tokenizer is given."""
    train_max_bytes: int = 16_000_000
    """At most this many bytes of the corpus are used to train that BPE."""


@dataclass
class DataSection:
    """Text corpora for pretraining / AR adaptation (``task`` pretrain or adapt)."""

    corpus: list[str] = field(default_factory=lambda: ["stdlib"])
    """Text sources: "stdlib" (the embedded standard-library sources), a text/.py file, a folder (its *.py
    files, sorted), or a .jsonl file with a "text" field per line."""
    stdlib_exclude: list[str] = field(default_factory=list)
    """Glob patterns of standard-library files to leave out of "stdlib", relative to its root, e.g.
    ["encodings/*", "pydoc_data/*"] (codec tables and prose: 18% of the bytes, and what an undertrained model
    imitates first)."""
    extra_texts: list[str] = field(default_factory=list)
    """More documents given inline (the Python API passes e.g. synthetic-task solutions here)."""
    synthetic_solutions: int = 0
    """Append the canonical solutions of this many train-split synthetic tasks (diffucoder.tasks) to the
    corpus (the test split is never used)."""
    synthetic_questions: bool = False
    """Head each synthetic solution with its task's question as a comment line (``# Write a Python function
    ...``): documents where the code restates names and constants from the text before it, which is what
    instruction following needs and what a small model learns slowly from the standard library alone."""
    seq_len: int = 256
    """Tokens per packed training sequence."""
    heldout_fraction: float = 0.01
    """Fraction of the documents held out (chosen by a hash of their content) for the ELBO evaluation."""
    max_documents: int | None = None
    """Use only the first N documents of the corpus (quick runs, tests)."""
    separator: str = "eos"
    """Token between packed documents: "eos" (end-of-text) or "none"."""


@dataclass
class SFTSection:
    """Supervised fine-tuning data (``task: sft``)."""

    files: list[str] = field(default_factory=list)
    """jsonl files, one example per line: {"messages": [{"role", "content"}...]} (the last message is the
    answer) or {"prompt": ..., "completion": ...}."""
    synthetic_tasks: int = 0
    """Also generate this many synthetic programming tasks (diffucoder.tasks) as examples."""
    synthetic_tiers: list[str] = field(default_factory=lambda: ["easy", "medium", "hard"])
    """Tiers of those tasks, taken round-robin: repeat a tier to weight it (["easy", "easy", "medium", "hard"]
    makes half of them easy)."""
    max_length: int = 256
    """Tokens per SFT row: prompt + answer + pad tokens (with ``packing``: of all the examples packed into the
    row). Longer examples are dropped (and counted)."""
    padding: Literal["fixed", "flexible"] = "fixed"
    """"fixed": every row padded to ``max_length`` with the pad token as a learned target (DiffuCoder; how the
    model learns where to stop). "flexible": padded only to the longest row of the global batch. With
    ``packing``, the row length only (each example's own pad targets are set by ``pack_answer_length``)."""
    packing: bool = False
    """Pack several examples into each row (first-fit over a seeded shuffle, once per run), each with its own
    position ids, its own noise level and masks, and a block-diagonal attention mask, so each is computed
    exactly as it would be alone; fewer pad tokens per example. ``optim.global_batch_size`` then counts packed
    rows; the held-out evaluation stays on unpacked rows (comparable with unpacked runs)."""
    pack_answer_length: int | None = None
    """With ``packing``: each example's answer region (answer, ``<|im_end|>``, pad targets) is padded to at least
    this many tokens, always with at least one pad target: DiffuCoder's fixed-length padding, per example, which
    is how the model learns to end its answer (the generation length, e.g. 64, trains exactly the canvas the
    model decodes on). None: the longest answer of the data plus one. Small values are a trap: with a single pad
    target the model never sees a pad after a pad and fills the rest of a decoding canvas with code."""
    synthetic_prompt_format: Literal["default", "short"] = "default"
    """User message of the synthetic tasks (diffucoder.tasks.formats.PROMPT_FORMATS): "default" is the question
    and a format instruction; "short" the question alone (14 fewer tokens with the demo's tokenizer; pair it
    with ``system_prompt: null`` for 30 fewer). Evaluate such a model with prompts in the same format."""
    batch_groups: Literal["none", "source"] = "none"
    """"source": every global batch is drawn from one source of examples (one ``files`` entry, the inline
    records, or one tier of the synthetic tasks), each source taking its share of the steps (training.data.
    BatchOrder). With flexible padding this keeps one long example from padding a batch of short ones (mixing
    10% medium-tier tasks into easy ones padded most easy batches to a medium row). "none": one shuffle of all the
    examples (the reference's). Unpacked rows only."""
    progressive_condition_steps: int = 0
    """Introduce the conditional mask progressively: at step s a row keeps its prompt clean with probability
    min(1, s / N), otherwise the whole row is noised like pretraining. 0: the prompt is never masked."""
    system_prompt: str | None = "You are a helpful assistant."
    """System turn of the chat template (None: no system turn)."""
    heldout_fraction: float = 0.05
    """Fraction of the examples held out for the ELBO evaluation."""


@dataclass
class DiffusionSection:
    """The masked-diffusion objective (reference.md section 2)."""

    eps: float = 1e-3
    """t ~ U(eps, 1) per sequence."""
    t_sampling: Literal["uniform", "antithetic", "stratified"] = "uniform"
    """How the batch's noise levels are drawn (antithetic/stratified lower the loss variance)."""
    normalization: Literal["masked_tokens", "all_tokens"] = "masked_tokens"
    """Divide the ELBO-weighted CE by the masked-token count (DiffuLLaMA/DiffuCoder) or by the number of
    loss-bearing positions, B*L in pretraining (LLaDA)."""
    loss_weighting: Literal["elbo", "none"] = "elbo"
    """"elbo": each masked token's CE weighted by 1/t (the ELBO; DiffuCoder, LLaDA). "none": plain masked CE,
    which gives the heavily masked rows (the ones generation starts from) more of the gradient and drops the
    rare huge weights of rows with tiny t. The held-out evaluation reports the ELBO either way."""
    anneal_steps: int = 0
    """AR adaptation: the attention goes from causal to full over this many steps (mask = causal OR
    Bernoulli(min(1, step/N)); 10000 in DiffuCoder). 0: full attention from the start."""
    random_truncation_prob: float = 0.0
    """LLaDA: this fraction of rows is cut to a random length (the rest is padding, hidden and not scored)."""
    clean_prefix_prob: float = 0.0
    """LLaDA: this fraction of rows keeps a random-length prefix clean as a condition."""


@dataclass
class OptimSection:
    """AdamW with linear warm-up and cosine decay."""

    steps: int = 1000
    """Optimizer steps."""
    global_batch_size: int = 32
    """Sequences per optimizer step, over all ranks and accumulation micro-batches."""
    micro_batch_size: int = 8
    """Sequences per forward/backward on one rank; accumulation = global / (micro * world size)."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * min_lr_ratio at the last step."""
    warmup_steps: int = 100
    """Linear warm-up from 0."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not to norms, biases)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam betas."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    max_minutes: float | None = None
    """Stop (and save) after this wall-clock budget even if ``steps`` is not reached."""


@dataclass
class EvalSection:
    """Held-out ELBO evaluation."""

    every: int = 100
    """Evaluate every N steps (and at the end); 0: only at the end."""
    num_sequences: int = 64
    """Held-out sequences per evaluation (the same sequences and noise every time)."""
    batch_size: int = 16
    """Sequences per evaluation forward."""


@dataclass
class CheckpointSection:
    """Training checkpoints (model + optimizer + scheduler + step, one atomic folder each)."""

    every: int = 100
    """Save every N steps (0: never, only the final model)."""
    keep_last: int = 2
    """Keep the newest N checkpoints."""


@dataclass
class LoggingSection:
    """Progress and metrics."""

    every: int = 10
    """Write a metrics line every N steps."""
    progress: bool = True
    """Show a progress bar (rank 0) with loss and tokens/s."""
    tensorboard: bool = False
    """Also write TensorBoard scalars (needs the tensorboard package)."""


@dataclass
class RuntimeSection:
    """Devices, precision, parallelism."""

    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda"."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast matmuls to bfloat16 (weights and optimizer stay fp32), on CPU and GPU."""
    threads: int | None = None
    """torch CPU threads per process (None: torch's default divided by the local world size)."""
    fsdp: bool = False
    """Shard parameters, gradients and optimizer state over ranks (FSDP2, per transformer block) instead of
    DDP replication, for models that do not fit one device."""
    compile: bool = False
    """torch.compile the model (slow start; small gain on CPU)."""


@dataclass
class TrainConfig:
    """One training run."""

    run_dir: str = "runs/train"
    """Folder of this run: config.yaml, metrics.jsonl, checkpoints/, final/ (an HF-layout model folder)."""
    task: Literal["pretrain", "adapt", "sft"] = "pretrain"
    """pretrain: masked diffusion from scratch on ``data``; adapt: the same from a causal LM (``model.init_from``)
    with attention annealing; sft: prompt/answer pairs from ``sft``."""
    kind: str = "train"
    """Config family marker used by the config test (always "train" here)."""
    seed: int = 0
    """Seeds the initialisation, data order and noise; a run is a pure function of the config."""
    resume: str = "auto"
    """"auto": continue from the newest checkpoint in run_dir if any; "never": start over (refuses a run_dir
    that holds checkpoints); or a checkpoint folder."""
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    sft: SFTSection = field(default_factory=SFTSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    optim: OptimSection = field(default_factory=OptimSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str, *keys: str) -> None:
            if not cond:
                raise ConfigError(msg, keys)

        o = self.optim
        need(self.kind == "train", f"kind must be 'train' for a training config, got {self.kind!r}", "kind")
        need(o.steps >= 1, f"optim.steps must be >= 1, got {o.steps}", "optim.steps")
        need(o.global_batch_size >= 1, f"optim.global_batch_size must be >= 1, got {o.global_batch_size}",
             "optim.global_batch_size")
        need(o.micro_batch_size >= 1, f"optim.micro_batch_size must be >= 1, got {o.micro_batch_size}",
             "optim.micro_batch_size")
        need(o.global_batch_size % o.micro_batch_size == 0,
             f"optim.global_batch_size ({o.global_batch_size}) must be a multiple of optim.micro_batch_size "
             f"({o.micro_batch_size})", "optim.global_batch_size", "optim.micro_batch_size")
        need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}", "optim.lr")
        need(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}",
             "optim.min_lr_ratio")
        need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}", "optim.warmup_steps")
        need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}", "optim.weight_decay")
        need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0: no clipping), got {o.grad_clip}",
             "optim.grad_clip")
        need(o.adam_eps > 0, f"optim.adam_eps must be > 0, got {o.adam_eps}", "optim.adam_eps")
        need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
             f"optim.betas must be two values in [0, 1), got {o.betas}", "optim.betas")
        need(o.max_minutes is None or o.max_minutes > 0, f"optim.max_minutes must be > 0, got {o.max_minutes}",
             "optim.max_minutes")
        need(0 < self.diffusion.eps < 1, f"diffusion.eps must be in (0, 1), got {self.diffusion.eps}",
             "diffusion.eps")
        need(self.diffusion.anneal_steps >= 0, f"diffusion.anneal_steps must be >= 0, got "
             f"{self.diffusion.anneal_steps}", "diffusion.anneal_steps")
        for name in ("random_truncation_prob", "clean_prefix_prob"):
            p = getattr(self.diffusion, name)
            need(0 <= p <= 1, f"diffusion.{name} must be in [0, 1], got {p}", f"diffusion.{name}")
        need(self.data.seq_len >= 2, f"data.seq_len must be >= 2, got {self.data.seq_len}", "data.seq_len")
        need(0 <= self.data.heldout_fraction < 1, f"data.heldout_fraction must be in [0, 1), got "
             f"{self.data.heldout_fraction}", "data.heldout_fraction")
        need(self.data.max_documents is None or self.data.max_documents >= 1,
             f"data.max_documents must be >= 1 (or null: all), got {self.data.max_documents}", "data.max_documents")
        need(self.data.synthetic_solutions >= 0, f"data.synthetic_solutions must be >= 0, got "
             f"{self.data.synthetic_solutions}", "data.synthetic_solutions")
        need(0 <= self.sft.heldout_fraction < 1, f"sft.heldout_fraction must be in [0, 1), got "
             f"{self.sft.heldout_fraction}", "sft.heldout_fraction")
        need(self.sft.max_length >= 2, f"sft.max_length must be >= 2, got {self.sft.max_length}", "sft.max_length")
        need(self.sft.synthetic_tasks >= 0, f"sft.synthetic_tasks must be >= 0, got {self.sft.synthetic_tasks}",
             "sft.synthetic_tasks")
        need(self.sft.progressive_condition_steps >= 0, f"sft.progressive_condition_steps must be >= 0, got "
             f"{self.sft.progressive_condition_steps}", "sft.progressive_condition_steps")
        need(self.sft.batch_groups == "none" or not self.sft.packing, "sft.batch_groups=source needs unpacked rows "
             "(sft.packing=false)", "sft.batch_groups", "sft.packing")
        need(self.sft.pack_answer_length is None or self.sft.pack_answer_length >= 0,
             f"sft.pack_answer_length must be >= 0, got {self.sft.pack_answer_length}", "sft.pack_answer_length")
        need(self.data.separator in ("eos", "none"), f"data.separator must be 'eos' or 'none', got "
             f"{self.data.separator!r}", "data.separator")
        need(self.task != "adapt" or self.model.init_from is not None,
             "task 'adapt' needs model.init_from (the causal LM to adapt)", "task", "model.init_from")
        from diffucoder.tokenizer import SPECIAL_TOKENS

        least = 256 + len(SPECIAL_TOKENS)
        need(self.tokenizer.vocab_size >= least, f"tokenizer.vocab_size must be >= {least} (256 bytes + the "
             f"special tokens), got {self.tokenizer.vocab_size}", "tokenizer.vocab_size")
        need(self.eval.every >= 0, f"eval.every must be >= 0 (0: only at the end), got {self.eval.every}",
             "eval.every")
        need(self.eval.num_sequences >= 1 and self.eval.batch_size >= 1,
             "eval.num_sequences and eval.batch_size must be >= 1", "eval.num_sequences", "eval.batch_size")
        need(self.checkpoint.every >= 0, f"checkpoint.every must be >= 0 (0: never), got {self.checkpoint.every}",
             "checkpoint.every")
        need(self.checkpoint.keep_last >= 1, f"checkpoint.keep_last must be >= 1, got {self.checkpoint.keep_last}",
             "checkpoint.keep_last")
        need(self.logging.every >= 1, f"logging.every must be >= 1, got {self.logging.every}", "logging.every")
        need(self.runtime.threads is None or self.runtime.threads >= 1,
             f"runtime.threads must be >= 1 (or null: the default), got {self.runtime.threads}", "runtime.threads")
        from diffucoder.model.config import PRESETS

        need(self.model.init_from is not None or self.model.preset in PRESETS,
             f"model.preset {self.model.preset!r} is not one of {sorted(PRESETS)}", "model.preset")
        need(self.runtime.device in ("auto", "cpu", "cuda") or self.runtime.device.startswith("cuda:"),
             f"runtime.device must be auto, cpu or cuda, got {self.runtime.device!r}", "runtime.device")
        need(self.resume in ("auto", "never") or bool(self.resume.strip()),
             "resume must be 'auto', 'never' or a checkpoint folder", "resume")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------------
# loading (the generic typed-settings machinery lives in diffucoder.settings; re-exported for older callers)
# ------------------------------------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Read a YAML training config (or start from defaults when ``path`` is None) and apply overrides; a
    :class:`ConfigError` says whether the file or an override holds a bad value."""
    return load_settings(TrainConfig, path, overrides, error=ConfigError)


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`), atomically."""
    import yaml

    from diffucoder.errors import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
