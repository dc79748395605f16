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

import ast
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config that does not describe a valid training run."""


@dataclass
class ModelSection:
    """What model to train."""

    preset: str = "tiny"
    """Shape of a model trained from scratch: "tiny" (tests), "5m", "20m" (DreamConfig.preset); ignored with
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
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        o = self.optim
        need(self.kind == "train", f"kind must be 'train' for a training config, got {self.kind!r}")
        need(o.steps >= 1, f"optim.steps must be >= 1, got {o.steps}")
        need(o.global_batch_size >= 1 and o.micro_batch_size >= 1, "batch sizes must be >= 1")
        need(o.global_batch_size % o.micro_batch_size == 0,
             f"optim.global_batch_size ({o.global_batch_size}) must be a multiple of optim.micro_batch_size "
             f"({o.micro_batch_size})")
        need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
        need(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        need(len(o.betas) == 2, f"optim.betas must have two values, got {o.betas}")
        need(0 < self.diffusion.eps < 1, f"diffusion.eps must be in (0, 1), got {self.diffusion.eps}")
        for name in ("random_truncation_prob", "clean_prefix_prob"):
            p = getattr(self.diffusion, name)
            need(0 <= p <= 1, f"diffusion.{name} must be in [0, 1], got {p}")
        need(self.data.seq_len >= 2, f"data.seq_len must be >= 2, got {self.data.seq_len}")
        need(0 <= self.data.heldout_fraction < 1, "data.heldout_fraction must be in [0, 1)")
        need(0 <= self.sft.heldout_fraction < 1, "sft.heldout_fraction must be in [0, 1)")
        need(self.sft.max_length >= 2, f"sft.max_length must be >= 2, got {self.sft.max_length}")
        need(self.sft.pack_answer_length is None or self.sft.pack_answer_length >= 0,
             f"sft.pack_answer_length must be >= 0, got {self.sft.pack_answer_length}")
        need(self.data.separator in ("eos", "none"), f"data.separator must be 'eos' or 'none', got "
             f"{self.data.separator!r}")
        need(self.task != "adapt" or self.model.init_from is not None,
             "task 'adapt' needs model.init_from (the causal LM to adapt)")
        need(self.checkpoint.keep_last >= 1, "checkpoint.keep_last must be >= 1")
        need(self.runtime.device in ("auto", "cpu", "cuda") or self.runtime.device.startswith("cuda:"),
             f"runtime.device must be auto, cpu or cuda, got {self.runtime.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------------
# generic dataclass <-> dict with type checking
# ------------------------------------------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source), for help and errors."""
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and, for numbers and tuples, converted to) the annotation ``tp``; a ConfigError
    that names ``where`` otherwise. Shared by every typed settings class (training configs, demo budgets)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return check_value(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {tp}" if value is not None or not errors
                          else errors[0])
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = get_args(tp) or (Any,)
        return [check_value(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:  # tuple[X, ...]: a list, a tuple, "a,b,c" or a single value from a command line
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg, *_) = get_args(tp) or (Any,)
        return tuple(check_value(v, arg, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (listing the valid ones)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    kwargs = {k: check_value(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``3`` -> 3, ``false`` -> False), or the text itself when it is not."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (YAML-parsed values) to a nested mapping, in place; returns it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-3)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(value)
    return data


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Read a YAML training config (or start from defaults when ``path`` is None) and apply overrides."""
    from diffucoder.yaml_io import read_yaml_mapping

    data: dict[str, Any] = read_yaml_mapping(path, ConfigError) if path is not None else {}
    apply_overrides(data, overrides)
    return from_dict(TrainConfig, data, where=str(path) if path else "config")


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
