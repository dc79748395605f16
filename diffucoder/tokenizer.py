"""Tokenizers: load ``tokenizer.json`` from a checkpoint folder, train a byte-level BPE, render the chat template.

Special tokens are always looked up by name through :class:`DiffuTokenizer` (``tok.mask_token_id``...), never
written as literal ids anywhere else in the code: the same code then works with the real DiffuCoder / Dream
vocabulary (mask id 151666) and with the 8k vocabularies we train on a CPU.

    tok = load_tokenizer("path/to/checkpoint")            # or a tokenizer.json file
    tok = train_tokenizer(iter_stdlib_texts(), vocab_size=8192)
    text = tok.apply_chat_template([{"role": "user", "content": "Write add(a, b)."}])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffucoder.errors import InputError

# Names of the special tokens (Qwen2.5 + Dream + DiffuCoder-Instruct).
EOS_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
BOS_TOKEN = "<|beginoftext|>"
MASK_TOKEN = "<|mask|>"
SFT_PAD_TOKEN = "<|dlm_pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, IM_START_TOKEN, IM_END_TOKEN, BOS_TOKEN, MASK_TOKEN, SFT_PAD_TOKEN)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2's pre-tokenisation pattern: words, single digits, punctuation runs, newlines and whitespace runs.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Jinja form of the template rendered by apply_chat_template (written to tokenizer_config.json so Hugging Face
# tokenizers render the same text).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class TokenizerError(InputError):
    """A tokenizer file that cannot serve a diffusion model (e.g. no [MASK] token)."""


class TokenizerNotFoundError(TokenizerError, FileNotFoundError):
    """No tokenizer.json where one was expected."""


@dataclass
class DiffuTokenizer:
    """A ``tokenizers.Tokenizer`` with the special tokens a diffusion coder needs, looked up by name."""

    backend: Any  # tokenizers.Tokenizer
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if self.token_to_id(MASK_TOKEN) is None:
            raise TokenizerError(f"{self.source}: the mask token {MASK_TOKEN!r} is absent from the vocabulary; "
                                 f"add it with add_diffusion_tokens() before using this tokenizer for diffusion")
        if self.token_to_id(EOS_TOKEN) is None:
            raise TokenizerError(f"{self.source}: the end-of-text token {EOS_TOKEN!r} is absent")

    # -- ids by name --------------------------------------------------------------------------------------
    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    def _require(self, token: str) -> int:
        i = self.token_to_id(token)
        if i is None:
            raise TokenizerError(f"{self.source}: special token {token!r} is absent")
        return i

    @property
    def mask_token_id(self) -> int:
        return self._require(MASK_TOKEN)

    @property
    def eos_token_id(self) -> int:
        return self._require(EOS_TOKEN)

    @property
    def bos_token_id(self) -> int | None:
        return self.token_to_id(BOS_TOKEN)

    @property
    def sft_pad_token_id(self) -> int | None:
        """``<|dlm_pad|>``, the pad token SFT learns as a target (None when the vocabulary lacks it)."""
        return self.token_to_id(SFT_PAD_TOKEN)

    @property
    def pad_token_id(self) -> int:
        """The SFT pad token when present, else end-of-text (as Dream / Qwen)."""
        pad = self.sft_pad_token_id
        return pad if pad is not None else self.eos_token_id

    @property
    def im_start_id(self) -> int:
        return self._require(IM_START_TOKEN)

    @property
    def im_end_id(self) -> int:
        return self._require(IM_END_TOKEN)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce / decode (a model's vocab_size may be larger)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def special_tokens(self) -> dict[str, int | None]:
        return {t: self.token_to_id(t) for t in SPECIAL_TOKENS}

    def stop_token_ids(self) -> list[int]:
        """Ids after which generated text is cut: end-of-text, the SFT pad token and ``<|im_end|>``."""
        ids = [self.token_to_id(t) for t in (EOS_TOKEN, SFT_PAD_TOKEN, IM_END_TOKEN)]
        return [i for i in ids if i is not None]

    # -- text ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                            system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
        """Qwen2's chat format; a default system turn is added when the first message is not one."""
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise TokenizerError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
            if i == 0 and m["role"] != "system" and system_prompt is not None:
                out.append(f"{IM_START_TOKEN}system\n{system_prompt}{IM_END_TOKEN}\n")
            out.append(f"{IM_START_TOKEN}{m['role']}\n{m['content']}{IM_END_TOKEN}\n")
        if add_generation_prompt:
            out.append(f"{IM_START_TOKEN}assistant\n")
        return "".join(out)

    # -- files --------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (Hugging Face layout)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        present = {name: tok for name, tok in (("eos_token", EOS_TOKEN), ("bos_token", BOS_TOKEN),
                                                ("mask_token", MASK_TOKEN))
                   if self.token_to_id(tok) is not None}
        present["pad_token"] = SFT_PAD_TOKEN if self.sft_pad_token_id is not None else EOS_TOKEN
        added = {}
        for tok in self.backend.get_added_tokens_decoder().items():
            i, t = tok
            added[str(i)] = {"content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip,
                             "normalized": t.normalized, "single_word": t.single_word, "special": t.special}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
            "model_max_length": 131072,
            "clean_up_tokenization_spaces": False,
            "added_tokens_decoder": added,
            **present,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (folder / "special_tokens_map.json").write_text(json.dumps(present, indent=2, sort_keys=True) + "\n")


def load_tokenizer(path: str | Path, require_mask: bool = True) -> DiffuTokenizer:
    """Load ``tokenizer.json`` (a file, or a checkpoint folder holding one)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.exists():
        raise TokenizerNotFoundError(f"{path}: no such tokenizer file or folder")
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise TokenizerNotFoundError(f"{path}: this folder has no tokenizer.json")
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception subclass
        raise TokenizerError(f"{file}: cannot parse tokenizer ({e})") from None
    if not require_mask and backend.token_to_id(MASK_TOKEN) is None:
        add_diffusion_tokens(backend)
    return DiffuTokenizer(backend, source=str(file))


def add_diffusion_tokens(backend: Any) -> int:
    """Add the Dream / DiffuCoder special tokens a causal-LM tokenizer lacks (returns how many were added)."""
    from tokenizers import AddedToken

    missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
    if missing:
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return len(missing)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2,
                    show_progress: bool = False) -> DiffuTokenizer:
    """Train a byte-level BPE (Qwen2's pre-tokenisation) with the special tokens at ids 0..5."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level BPE "
                         f"(needs at least {256 + len(SPECIAL_TOKENS)})")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return DiffuTokenizer(backend, source="<trained>")
