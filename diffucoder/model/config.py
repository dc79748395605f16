"""``DreamConfig``: the configuration of the Dream architecture, stored as ``config.json``.

Field names and defaults follow the Dream / DiffuCoder checkpoints (``model_type`` "Dream", ``architectures``
["DreamModel"]), so a folder we write reads in the reference code and theirs reads here. Keys we do not use are
kept in ``extra`` and written back unchanged, so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffucoder.errors import InputError

SUPPORTED_MODEL_TYPES = ("Dream",)
# Causal-LM folders that can initialise a Dream model (same tensor names): how DiffuCoder was made.
INIT_MODEL_TYPES = ("qwen2",)
# Keys a config.json must have: they fix the tensor shapes, and a default (the 7B's) would describe another model.
REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads")
# What a config.json that lacks these keys means in the reference code (Dream's configuration_dream.py and
# transformers' Qwen2Config); our dataclass defaults are DiffuCoder-7B's values instead.
FILE_DEFAULTS = {"rope_theta": 10000.0, "max_position_embeddings": 32768}


class ConfigError(InputError):
    """A config.json that cannot describe a Dream model."""


# Small shapes for CPU work (DreamConfig.preset): "tiny" (~0.2M + embeddings, for tests), "4m" (the demo's: the
# "5m" shape with 4 layers instead of 6), "5m", "20m".
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "4m": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
               num_key_value_heads=4),
    "5m": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=6, num_attention_heads=8,
               num_key_value_heads=4),
    "20m": dict(hidden_size=448, intermediate_size=1216, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=4),
}


@dataclass
class DreamConfig:
    """Hyper-parameters of a Dream / DiffuCoder model (a Qwen2 transformer with bidirectional attention)."""

    vocab_size: int = 152064
    """Rows of the embedding and the LM head (may exceed the tokenizer's size)."""
    hidden_size: int = 3584
    """Model width."""
    intermediate_size: int = 18944
    """SwiGLU MLP width."""
    num_hidden_layers: int = 28
    """Number of transformer blocks."""
    num_attention_heads: int = 28
    """Query heads."""
    num_key_value_heads: int = 4
    """Key/value heads (grouped-query attention); must divide ``num_attention_heads``."""
    head_dim: int | None = None
    """Per-head width; ``hidden_size // num_attention_heads`` when None."""
    hidden_act: str = "silu"
    """MLP activation (only "silu" is supported, as in Qwen2)."""
    max_position_embeddings: int = 131072
    """Longest context the model is meant for (prompt + canvas)."""
    rope_theta: float = 1_000_000.0
    """RoPE base."""
    rope_scaling: dict | None = None
    """RoPE scaling (only None is supported)."""
    rms_norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    initializer_range: float = 0.02
    """Std of the normal init of linear and embedding weights."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities during training."""
    tie_word_embeddings: bool = False
    """Share the LM head with the input embedding (then ``lm_head.weight`` is not stored)."""
    mask_token_id: int | None = 151666
    """Id of the [MASK] token of the absorbing-state diffusion."""
    bos_token_id: int | None = 151643
    """Beginning-of-text id."""
    eos_token_id: int | None = 151643
    """End-of-text id."""
    pad_token_id: int | None = 151643
    """Padding id."""
    torch_dtype: str | None = "bfloat16"
    """Dtype the weights are stored in."""
    use_cache: bool = False
    """Kept for compatibility with the reference config; the model has no KV cache of its own."""
    use_sliding_window: bool = False
    """Kept for compatibility (sliding-window attention is not supported)."""
    sliding_window: int | None = None
    """Kept for compatibility."""
    max_window_layers: int | None = None
    """Kept for compatibility."""
    shift_logits: bool = True
    """The AR "shift": output i predicts token i+1 (Dream/DiffuCoder, adapted from an AR model). A model
    trained from scratch may set False so that output i predicts token i. Absent in the reference configs,
    where it is implicitly True."""
    model_type: str = "Dream"
    architectures: list[str] = field(default_factory=lambda: ["DreamModel"])
    extra: dict[str, Any] = field(default_factory=dict)
    """config.json keys this class does not model (``auto_map``, ``transformers_version``...), kept verbatim."""

    def __post_init__(self) -> None:
        self.validate()

    # -- derived -------------------------------------------------------------------------------------------
    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads"):
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0, f"{name} must be a positive integer, got {v!r}")
        need(self.num_attention_heads % self.num_key_value_heads == 0,
             f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
             f"({self.num_key_value_heads})")
        need(self.head_dim is not None or self.hidden_size % self.num_attention_heads == 0,
             f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
             f"({self.num_attention_heads})")
        need(self.dim_per_head % 2 == 0, f"head dimension must be even for RoPE, got {self.dim_per_head}")
        need(self.hidden_act == "silu", f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        need(self.rope_scaling is None, f"rope_scaling {self.rope_scaling!r} is not supported")
        if self.mask_token_id is not None:
            need(0 <= self.mask_token_id < self.vocab_size,
                 f"mask_token_id {self.mask_token_id} is outside the vocabulary (vocab_size {self.vocab_size})")

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Parameter count computed from the shapes (no model needed)."""
        h, i, hd = self.hidden_size, self.intermediate_size, self.dim_per_head
        q = self.num_attention_heads * hd
        kv = self.num_key_value_heads * hd
        attn = h * q + q + 2 * (h * kv + kv) + q * h
        mlp = 3 * h * i
        per_layer = attn + mlp + 2 * h
        n = self.num_hidden_layers * per_layer + h
        if include_embeddings:
            n += self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return n

    # -- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            if f.name == "head_dim" and self.head_dim is None:
                continue
            out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "DreamConfig":
        """A config from a config.json mapping. The shape keys (``REQUIRED_KEYS``) must be present: a missing
        one is a ConfigError naming it, never a silent 7B default. Other missing keys take the reference code's
        defaults (``FILE_DEFAULTS`` where those differ from this class's)."""
        d = dict(d)
        mt = d.get("model_type")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{source}: model_type {mt!r} is not supported (expected one of {list(SUPPORTED_MODEL_TYPES)}; "
                f"a {list(INIT_MODEL_TYPES)} causal-LM folder can initialise a model via DreamModel.from_qwen2)"
            )
        rp = d.get("rope_parameters")
        if isinstance(rp, dict) and "rope_theta" not in d:
            # transformers >= 5 writes RoPE settings as rope_parameters = {rope_theta, rope_type}
            if rp.get("rope_type", "default") != "default":
                raise ConfigError(f"{source}: rope_type {rp.get('rope_type')!r} is not supported (only 'default')")
            d["rope_theta"] = rp.get("rope_theta", 10000.0)
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise ConfigError(f"{source}: lacks {', '.join(missing)} (a config.json must give the model's shape: "
                              f"{', '.join(REQUIRED_KEYS)})")
        for k, v in FILE_DEFAULTS.items():
            d.setdefault(k, v)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_qwen2_dict(cls, d: dict[str, Any], mask_token_id: int, source: str = "config") -> "DreamConfig":
        """Map a Qwen2 causal-LM config to a Dream config with the same shapes (the AR model to adapt)."""
        if d.get("model_type") not in INIT_MODEL_TYPES:
            raise ConfigError(f"{source}: model_type {d.get('model_type')!r} is not a Qwen2 causal LM")
        d = dict(d)
        d.pop("architectures", None)
        d.pop("auto_map", None)
        d["model_type"] = "Dream"
        d["mask_token_id"] = mask_token_id
        if "rope_theta" not in d and not isinstance(d.get("rope_parameters"), dict):
            d["rope_theta"] = 10000.0
        d.setdefault("tie_word_embeddings", False)
        return cls.from_dict(d, source=source)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "DreamConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config.json not found (not a checkpoint folder?)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    # -- presets -------------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, vocab_size: int | None = None, tokenizer: Any = None,
               **overrides: Any) -> "DreamConfig":
        """Small shapes for CPU work. ``name``: "tiny" (~0.2M + embeddings, for tests), "4m", "5m", "20m".

        Give ``tokenizer`` (a DiffuTokenizer) to take the vocabulary size and the mask / eos / pad / bos ids
        from it by name; otherwise give ``vocab_size`` (and ids as overrides)."""
        if tokenizer is not None:
            ids = dict(vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id)
            overrides = {**ids, **overrides}
            vocab_size = overrides.pop("vocab_size")
        if vocab_size is None:
            raise ConfigError("preset() needs vocab_size or tokenizer")
        presets = PRESETS
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        base = dict(vocab_size=vocab_size, max_position_embeddings=2048, rope_theta=10000.0,
                    tie_word_embeddings=True, torch_dtype="float32", mask_token_id=None,
                    bos_token_id=None, eos_token_id=None, pad_token_id=None)
        base.update(presets[name])
        base.update(overrides)
        return cls(**base)
