"""The Dream architecture (what DiffuCoder uses): a Qwen2 transformer with full bidirectional attention.

Pre-norm RMSNorm blocks, rotary position embeddings, grouped-query attention through
``torch.nn.functional.scaled_dot_product_attention`` with q/k/v biases, a SwiGLU MLP, a final RMSNorm and an LM
head (tied or untied). Parameter names are Qwen2's, so Qwen2 / Qwen2.5-Coder causal-LM weights load unchanged.

The AR "shift" (reference.md section 1): a model adapted from an AR model keeps the convention that output i
predicts token i+1, also when i+1 holds [MASK]. ``forward`` returns the raw logits (as the reference does);
``token_logits`` returns them re-aligned so that ``logits[:, j]`` predicts ``x[:, j]`` whatever the config's
``shift_logits`` says. Samplers, losses and estimators should use ``token_logits`` (position 0 then carries no
prediction when shifting: keep it unmasked).

Decoding with a KV cache (``DreamKVCache``, what ``diffusion_generate(use_cache=...)`` uses): a full forward over the
canvas with ``kv_cache=model.new_kv_cache()`` stores every layer's keys and values (RoPE applied); a later call with
``input_ids`` = a window ``canvas[:, start:start + W]`` and ``cache_start=start`` recomputes only those W positions,
writes their fresh keys/values into the cache and lets them attend to all L cached positions (the same padding
mask and positions as the full call). Where the cached keys/values are current this equals the full forward's
rows; where they are stale (other positions changed since) it is the Fast-dLLM approximation.

Usage::

    cfg = DreamConfig.preset("tiny", vocab_size=1000, mask_token_id=999)
    model = DreamModel(cfg)
    out = model(input_ids, attention_mask=None)   # out.logits: (B, L, V)
    model.save_pretrained("ckpt");  DreamModel.from_pretrained("ckpt", torch_dtype=torch.bfloat16)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from diffucoder.model.config import DreamConfig

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.tokenizer import DiffuTokenizer


@dataclass
class DreamOutput:
    """What ``DreamModel.forward`` returns."""

    logits: torch.Tensor  # (B, L, V), raw (shifted when config.shift_logits)
    hidden_states: torch.Tensor | None = None  # (B, L, H) after the final norm, when asked for


@dataclass
class DreamKVCache:
    """Keys and values of every layer over one whole canvas (B, L), filled by a full forward.

    Made empty by :meth:`DreamModel.new_kv_cache`; the first forward that receives it must cover the whole canvas
    (``cache_start=0``): it allocates the buffers and records the canvas's padding mask and positions, which
    every later window call reuses (the canvas length and padding cannot change afterwards).
    """

    keys: list[torch.Tensor] = field(default_factory=list)
    """Per layer (B, Hkv, L, D), RoPE applied."""
    values: list[torch.Tensor] = field(default_factory=list)
    """Per layer (B, Hkv, L, D)."""
    position_ids: torch.Tensor | None = None
    """(B, L) positions of the canvas (``cumsum(mask) - 1`` under left padding)."""
    attn_mask: torch.Tensor | None = None
    """The SDPA key mask of the canvas ((B, 1, 1, L) bool) or None when nothing is padded."""

    @property
    def length(self) -> int:
        """Canvas length L (0 while empty)."""
        return 0 if self.position_ids is None else int(self.position_ids.shape[1])

    @property
    def is_empty(self) -> bool:
        return self.position_ids is None

    def reset(self) -> None:
        """Forget everything (the next forward must be a full one again)."""
        self.keys, self.values, self.position_ids, self.attn_mask = [], [], None, None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (B, L, head_dim) for integer ``position_ids`` (B, L); computed in fp32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                             device=position_ids.device) / head_dim))  # (D/2,)
    freqs = position_ids.float()[..., None] * inv_freq  # (B, L, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, L, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, L, D); cos/sin: (B, L, D) (both halves equal, as ``rope_cos_sin`` builds them).

    Computes ``x * cos + rotate_half(x) * sin`` half by half, which is the same arithmetic with fewer
    temporaries (no negated copy, one concatenation).
    """
    h = x.shape[-1] // 2
    c, s = cos[:, None, :, :h], sin[:, None, :, :h]  # (B, 1, L, D/2)
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.dim_per_head
        self.dropout = cfg.attention_dropout
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=True)
        self.v_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=False)

    def _fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One (nq + 2 nkv, H) weight and bias for q, k, v: one matmul instead of three (the parameters stay
        Qwen2's three). Concatenated at every call while gradients are recorded; without autograd (decoding) the
        concatenation is kept and reused until a parameter is replaced or updated in place (its version)."""
        params = (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight,
                  self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)
        if torch.is_grad_enabled():
            self._qkv_cache = None
            return torch.cat(params[:3]), torch.cat(params[3:])
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = getattr(self, "_qkv_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, torch.cat(params[:3]), torch.cat(params[3:]))
            self._qkv_cache = cached
        return cached[1], cached[2]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache_start: int = 0) -> torch.Tensor:
        """Self-attention of ``x`` (B, L, H). With ``cache`` = this layer's (keys, values) buffers (B, Hkv, Lc, D),
        the fresh keys/values of ``x`` are written at ``[cache_start, cache_start + L)`` and the queries attend
        to all Lc cached positions (``attn_mask`` is then the cache's key mask)."""
        B, L, _ = x.shape
        nq, nkv = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        w, b = self._fused_qkv()
        q, k, v = F.linear(x, w, b).split((nq, nkv, nkv), dim=-1)  # (B, L, *)
        q = q.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, Hq, L, D)
        k = k.view(B, L, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, L, D)
        v = v.view(B, L, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, L, D)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            k_buf, v_buf = cache
            k_buf[:, :, cache_start:cache_start + L] = k
            v_buf[:, :, cache_start:cache_start + L] = v
            k, v = k_buf, v_buf  # (B, Hkv, Lc, D)
        # grouped-query attention inside SDPA (no repeated copies of k and v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=False,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv != self.n_heads,
        )  # (B, Hq, L, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache_start: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, cache, cache_start)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBackbone(nn.Module):
    """Embeddings, blocks and final norm (``model.*`` in checkpoints)."""

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, kv_cache: "DreamKVCache | None" = None,
                cache_start: int = 0) -> torch.Tensor:
        """Final-normed hidden states (B, L, H). ``kv_cache``/``cache_start``: see :class:`DreamKVCache`."""
        B, L = input_ids.shape
        if kv_cache is not None and not kv_cache.is_empty:
            attn_mask, position_ids = self._window_inputs(kv_cache, input_ids, attention_mask, position_ids,
                                                          cache_start)
        else:
            if kv_cache is not None and cache_start != 0:
                raise ValueError("an empty kv_cache is filled by a full forward over the canvas (cache_start=0)")
            attn_mask, default_pos = prepare_attention_mask(attention_mask, B, L)
            if position_ids is None:
                position_ids = default_pos if default_pos is not None else \
                    torch.arange(L, device=input_ids.device).expand(B, L)
        x = self.embed_tokens(input_ids)  # (B, L, H)
        cos, sin = rope_cos_sin(position_ids, self.config.dim_per_head, self.config.rope_theta, x.dtype)
        if kv_cache is not None and kv_cache.is_empty:
            if attn_mask is not None and attn_mask.dim() == 4 and attn_mask.shape[-2] != 1:
                raise ValueError("a kv_cache needs a 2-D padding mask (or none), not a 4-D attention mask")
            shape = (B, self.config.num_key_value_heads, L, self.config.dim_per_head)
            kv_cache.keys = [x.new_empty(shape) for _ in self.layers]
            kv_cache.values = [x.new_empty(shape) for _ in self.layers]
            kv_cache.position_ids, kv_cache.attn_mask = position_ids, attn_mask
        for i, layer in enumerate(self.layers):
            cache = (kv_cache.keys[i], kv_cache.values[i]) if kv_cache is not None else None
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, attn_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attn_mask, cache, cache_start)
        return self.norm(x)

    @staticmethod
    def _window_inputs(kv_cache: "DreamKVCache", input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       position_ids: torch.Tensor | None, cache_start: int
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Key mask and positions of a window ``[cache_start, cache_start + W)`` of a filled cache."""
        B, W = input_ids.shape
        if attention_mask is not None or position_ids is not None:
            raise ValueError("a window call over a filled kv_cache takes its mask and positions from the cache; "
                             "pass neither attention_mask nor position_ids")
        Bc, Lc = kv_cache.position_ids.shape
        if B != Bc or not (0 <= cache_start and cache_start + W <= Lc):
            raise ValueError(f"window of shape {(B, W)} at cache_start={cache_start} does not fit the cached "
                             f"canvas of shape {(Bc, Lc)}")
        return kv_cache.attn_mask, kv_cache.position_ids[:, cache_start:cache_start + W]


def prepare_attention_mask(attention_mask: torch.Tensor | None, B: int, L: int
                           ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Turn the accepted mask forms into an SDPA mask and default position ids.

    - None: full bidirectional attention.
    - 2-D (B, L) padding mask (1 = token, 0 = pad): keys that are padding are hidden from every query, and
      positions count real tokens only (``cumsum(mask) - 1``), so a left-padded row sees exactly what it would
      see unpadded. Pad queries still attend to the real keys (their outputs are never used), which keeps every
      softmax row non-empty.
    - 4-D boolean (B, 1, L, L), True = may attend (the reference's form), or a float additive mask. Query rows
      with no allowed key are given their own position, so no row is all -inf (which would give NaN).
    """
    if attention_mask is None:
        return None, None
    if attention_mask.dim() == 2:
        if attention_mask.shape != (B, L):
            raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} does not match "
                             f"input_ids of shape {(B, L)}")
        keep = attention_mask.bool()
        pos = (keep.long().cumsum(-1) - 1).clamp_min(0)
        if bool(keep.all()):
            return None, pos
        return keep[:, None, None, :], pos  # (B, 1, 1, L)
    if attention_mask.dim() == 4:
        if attention_mask.shape[-2:] != (L, L) or attention_mask.shape[0] not in (1, B):
            raise ValueError(f"4-D attention_mask must be (B, 1, L, L) = {(B, 1, L, L)}, got "
                             f"{tuple(attention_mask.shape)}")
        if attention_mask.dtype == torch.bool:
            empty = ~attention_mask.any(-1, keepdim=True)  # (B, 1, L, 1)
            if bool(empty.any()):
                eye = torch.eye(L, dtype=torch.bool, device=attention_mask.device)
                attention_mask = attention_mask | (empty & eye)
        return attention_mask, None
    raise ValueError(f"attention_mask must be None, 2-D (B, L) or 4-D (B, 1, L, L); got {attention_mask.dim()}-D")


class DreamModel(nn.Module):
    """Dream / DiffuCoder masked diffusion LM. See the module docstring."""

    def __init__(self, config: DreamConfig, init_weights: bool = True) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.model = DreamBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if init_weights:
            self.init_weights()

    # -- weights ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                if m.weight.device.type == "meta":
                    continue
                m.weight.normal_(0.0, std, generator=generator)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, RMSNorm) and m.weight.device.type != "meta":
                m.weight.fill_(1.0)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        seen: set[int] = set()
        n = 0
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if exclude_embeddings and ("embed_tokens" in name or "lm_head" in name):
                continue
            n += p.numel()
        return n

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, output_hidden_states: bool = False, *,
                kv_cache: DreamKVCache | None = None, cache_start: int = 0,
                logits_mask: torch.Tensor | None = None) -> DreamOutput:
        """Raw logits (B, L, V); output i predicts token i+1 when ``config.shift_logits``.

        ``kv_cache`` / ``cache_start``: decode with a cache (see :class:`DreamKVCache`): ``input_ids`` is then the
        window of the canvas starting at ``cache_start`` (the whole canvas on the call that fills the cache).
        ``logits_mask`` (B, L) bool: compute the LM head only where it is True and return those logits as
        (N, V), row-major (no full-vocabulary logits for positions nobody reads).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (B, L), got shape {tuple(input_ids.shape)}")
        h = self.model(input_ids, attention_mask, position_ids, kv_cache=kv_cache, cache_start=cache_start)
        if logits_mask is not None:
            if logits_mask.shape != input_ids.shape:
                raise ValueError(f"logits_mask must have input_ids' shape {tuple(input_ids.shape)}, got "
                                 f"{tuple(logits_mask.shape)}")
            logits = self.lm_head(h[logits_mask])  # (N, V)
        else:
            logits = self.lm_head(h)  # (B, L, V)
        return DreamOutput(logits=logits, hidden_states=h if output_hidden_states else None)

    def new_kv_cache(self) -> DreamKVCache:
        """An empty :class:`DreamKVCache`; the next forward over a whole canvas fills it."""
        return DreamKVCache()

    def token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits re-aligned so that ``out[:, j]`` predicts ``input_ids[:, j]`` (B, L, V)."""
        return align_logits(self(input_ids, attention_mask, position_ids).logits, self.config.shift_logits)

    # -- decoding (implemented in diffucoder.sampling) ------------------------------------------------------
    def diffusion_generate(self, inputs: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Dream's ``diffusion_generate``; see :func:`diffucoder.sampling.diffusion_generate`."""
        from diffucoder.sampling import diffusion_generate

        return diffusion_generate(self, inputs, **kwargs)

    # -- checkpoints (implemented in diffucoder.model.checkpoint) ------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype | str | None = "auto",
                        device: str | torch.device = "cpu", mask_token_id: int | None = None) -> "DreamModel":
        """Load a Dream/DiffuCoder folder (or initialise from a Qwen2 causal-LM folder)."""
        from diffucoder.model.checkpoint import load_pretrained

        return load_pretrained(cls, path, torch_dtype=torch_dtype, device=device, mask_token_id=mask_token_id)

    @classmethod
    def from_qwen2(cls, path: str | Path, mask_token_id: int | None = None,
                   torch_dtype: torch.dtype | str | None = "auto") -> "DreamModel":
        """Initialise from a Qwen2 / Qwen2.5-Coder causal-LM folder (how DiffuCoder was made)."""
        return cls.from_pretrained(path, torch_dtype=torch_dtype, mask_token_id=mask_token_id)

    def save_pretrained(self, path: str | Path, tokenizer: "DiffuTokenizer | None" = None,
                        max_shard_size: int | str = "5GB", generation_config: dict | None = None) -> Path:
        """Write an HF-layout folder atomically (sharded above ``max_shard_size``)."""
        from diffucoder.model.checkpoint import save_pretrained

        return save_pretrained(self, path, tokenizer=tokenizer, max_shard_size=max_shard_size,
                               generation_config=generation_config)


def align_logits(logits: torch.Tensor, shift: bool) -> torch.Tensor:
    """Undo the AR shift: ``cat([logits[:, :1], logits[:, :-1]])`` so that index j predicts token j."""
    if not shift:
        return logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
