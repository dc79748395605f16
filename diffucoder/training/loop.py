"""The training loop: masked-diffusion pretraining, AR adaptation and SFT, on one CPU or under torchrun.

``train(config) -> TrainResult`` builds the tokenizer, data and model from a :class:`TrainConfig`, then runs
AdamW (linear warm-up + cosine) with gradient accumulation and clipping, optional bf16 autocast, a held-out ELBO
evaluation every N steps, a progress bar and a ``metrics.jsonl`` log, atomic checkpoints, exact resume, and the
final model as an HF-layout folder with its tokenizer (``RUN/final``). The same function runs inside each process
of ``torchrun --nproc_per_node=N`` (DDP, or FSDP2 with ``runtime.fsdp``).

Loss normalisation over a split batch: each micro-batch contributes ``sum(CE / t) / D`` where ``D`` is the
masked-token (or maskable-position) count of the whole global batch, summed over ranks before the backward
passes; DDP's gradient averaging is undone by a factor ``world_size``. So the update equals the one computed on
the unsplit global batch.

With ``sft.packing`` a row holds several SFT examples (``training.data.PackedSFTRows``), each with its own
noise level, masks, positions and attention block; ``optim.global_batch_size`` then counts rows, and the logs
and checkpoints count ``examples_seen`` as well as tokens.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffucoder.diffusion.losses import model_loss_sums
from diffucoder.model import DreamConfig, DreamModel
from diffucoder.model.modeling import DecoderLayer
from diffucoder.rundir import ALLOW_FLAG
from diffucoder.training import distributed as D
from diffucoder.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from diffucoder.training.config import ConfigError, TrainConfig, dump_config
from diffucoder.training.data import (BatchOrder, PackedRows, PackedSFTRows, RowDataset, SFTRows,
                                      condition_probability, generator, lr_lambda, noise_rows, step_rows)

METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a finished (or time-limited) run produced."""

    run_dir: Path
    final_path: Path | None  # RUN/final: model + tokenizer (None on ranks other than 0)
    steps: int  # optimizer steps done
    tokens_seen: int  # tokens in the training batches (all ranks)
    examples_seen: int  # examples in the training batches (rows, or the examples packed into them)
    final_loss: float | None  # training loss of the last logged step
    eval: dict[str, float] = field(default_factory=dict)  # the last held-out evaluation
    eval_history: list[dict[str, float]] = field(default_factory=list)
    unigram_baseline: float | None = None  # held-out masked-token CE of the training unigram model (nats)
    elapsed_s: float = 0.0
    resumed_from: int | None = None  # step of the checkpoint the run resumed from
    stopped_by_time: bool = False  # optim.max_minutes ended the run before optim.steps


class DiffusionObjective(nn.Module):
    """Wraps the model so DDP/FSDP see one forward: returns (sum CE/t, sum CE, #masked, #maskable)."""

    def __init__(self, model: DreamModel, loss_weighting: str = "elbo") -> None:
        super().__init__()
        if loss_weighting not in ("elbo", "none"):
            raise ValueError(f"loss_weighting must be 'elbo' or 'none', got {loss_weighting!r}")
        self.model = model
        self.loss_weighting = loss_weighting

    def forward(self, xt: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, t: torch.Tensor,
                maskable: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        plain = self.loss_weighting == "none" and self.training  # eval mode (held-out ELBO) keeps 1/t
        s = model_loss_sums(self.model, xt, x0, is_masked, t, maskable, attention_mask, position_ids,
                            row_weights=torch.ones_like(t) if plain else None)
        return s.weighted_ce, s.ce, s.n_masked, s.n_maskable


# ------------------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Data:
    train: RowDataset
    heldout: RowDataset | None
    vocab_log_probs: torch.Tensor | None  # unigram log-probs from the training rows (V,)
    description: dict[str, Any]
    train_sources: list[str] | None = None  # SFT: the source of each training row (sft.batch_groups)


def build_tokenizer(cfg: TrainConfig, run_dir: Path, info: D.DistInfo, texts_for_training: Any = None):
    """The run's tokenizer, saved once as RUN/tokenizer so that a resume uses exactly the same one."""
    from diffucoder.model import atomic_directory
    from diffucoder.tokenizer import load_tokenizer, train_tokenizer

    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    if info.is_main:
        if cfg.tokenizer.path is not None:
            tok = load_tokenizer(cfg.tokenizer.path, require_mask=False)
        elif cfg.model.init_from is not None and (Path(cfg.model.init_from) / "tokenizer.json").is_file():
            tok = load_tokenizer(cfg.model.init_from, require_mask=False)
        elif cfg.model.init_from is not None:
            raise ConfigError(f"{cfg.model.init_from}: has no tokenizer.json; set tokenizer.path")
        else:
            texts = texts_for_training() if callable(texts_for_training) else texts_for_training

            def limited():
                n = 0
                for t in texts:
                    if n >= cfg.tokenizer.train_max_bytes:
                        return
                    n += len(t)
                    yield t

            tok = train_tokenizer(limited(), vocab_size=cfg.tokenizer.vocab_size)
        with atomic_directory(saved) as tmp:
            tok.save_pretrained(tmp)
    D.barrier(info)
    return load_tokenizer(saved)


def _data_fingerprint(cfg: TrainConfig, tok_vocab: int, extra: Sequence[str], sft_records: Sequence[Any]) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps([cfg.task, cfg.data.__dict__, cfg.sft.__dict__, tok_vocab], sort_keys=True,
                        default=str).encode())
    for t in extra:
        h.update(t.encode("utf-8", errors="replace"))
    for r in sft_records:
        h.update(json.dumps(r, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def build_data(cfg: TrainConfig, tok, run_dir: Path, info: D.DistInfo, extra_texts: Sequence[str] = (),
               sft_records: Sequence[Any] = ()) -> Data:
    """Tokenised data, built once by rank 0 and cached as RUN/data.pt (a resume reuses it)."""
    cache = run_dir / "data.pt"
    fp = _data_fingerprint(cfg, tok.vocab_size, extra_texts, sft_records)
    if info.is_main:
        ok = cache.is_file() and torch.load(cache, weights_only=False).get("fingerprint") == fp
        if not ok:
            payload = (_build_sft_payload if cfg.task == "sft" else _build_text_payload)(
                cfg, tok, extra_texts, sft_records)
            payload["fingerprint"] = fp
            tmp = cache.with_suffix(f".tmp-{os.getpid()}")
            try:
                torch.save(payload, tmp)
            except (OSError, RuntimeError) as e:
                from diffucoder.errors import disk_full_error, is_disk_full

                full = is_disk_full(e, run_dir)
                tmp.unlink(missing_ok=True)
                if full:
                    raise disk_full_error(cache, "nothing of the run was changed") from None
                raise
            os.replace(tmp, cache)
    D.barrier(info)
    payload = torch.load(cache, weights_only=False)
    vocab = max(tok.vocab_size, 1)
    if cfg.task == "sft":
        from diffucoder.data.sft import SFTExample

        def rows(exs):
            return SFTRows([SFTExample(*e) for e in exs], cfg.sft.max_length, tok.pad_token_id, cfg.sft.padding)

        if cfg.sft.packing:
            train = PackedSFTRows([SFTExample(*e) for e in payload["train"]], cfg.sft.max_length, tok.pad_token_id,
                                  cfg.sft.padding, payload["answer_length"], cfg.seed)
        else:
            train = rows(payload["train"])
        held = rows(payload["heldout"]) if payload["heldout"] else None  # unpacked either way: comparable runs
        # the answer region of fixed-length rows (packed: of each example's segment): answer tokens and pad targets
        if isinstance(train, PackedSFTRows):
            pads = sum(n - len(e.prompt_ids) - len(e.answer_ids) for n, e in zip(train.lengths, train.examples))
        else:
            pads = sum(max(0, cfg.sft.max_length - len(e[0]) - len(e[1])) for e in payload["train"])
        flat = torch.tensor([i for e in payload["train"] for i in e[1]] + [tok.pad_token_id] * pads,
                            dtype=torch.long)
    else:
        train = PackedRows(payload["train"])
        held = PackedRows(payload["heldout"]) if payload["heldout"] is not None else None
        flat = payload["train"]
    from diffucoder.data.packing import unigram_log_probs

    description = dict(payload["description"])
    if isinstance(train, PackedSFTRows):
        description.update(packed_rows=len(train), pack_fill=round(train.fill(), 4),
                           examples_per_row=round(len(train.examples) / len(train), 3))
    sources = payload.get("train_sources") if cfg.task == "sft" else None
    return Data(train, held, unigram_log_probs(flat, vocab), description, sources)


def _build_text_payload(cfg: TrainConfig, tok, extra_texts: Sequence[str], sft_records: Sequence[Any]) -> dict:
    from diffucoder.data.packing import pack_documents, split_heldout

    texts = corpus_texts(cfg, list(extra_texts) + _synthetic_solutions(
        cfg.data.synthetic_solutions, cfg.seed, cfg.data.synthetic_questions))
    train_docs, held_docs = split_heldout(texts, cfg.data.heldout_fraction)
    sep = tok.eos_token_id if cfg.data.separator == "eos" else None
    train = pack_documents(tok.encode_batch(train_docs), cfg.data.seq_len, sep)
    held = None
    if held_docs:
        try:
            held = pack_documents(tok.encode_batch(held_docs), cfg.data.seq_len, sep)
        except ValueError:
            held = None
    desc = {"documents": len(texts), "train_documents": len(train_docs), "heldout_documents": len(held_docs),
            "train_rows": int(train.shape[0]), "heldout_rows": int(held.shape[0]) if held is not None else 0,
            "train_tokens": int(train.numel()), "seq_len": cfg.data.seq_len}
    return {"train": train, "heldout": held, "description": desc}


def _build_sft_payload(cfg: TrainConfig, tok, extra_texts: Sequence[str], sft_records: Sequence[Any]) -> dict:
    from diffucoder.data.packing import is_heldout
    from diffucoder.data.sft import encode_examples, fits, parse_record, read_sft_jsonl

    from diffucoder.errors import DiffucoderError, InputError

    records, sources = [], []
    for f in cfg.sft.files:
        try:
            got = read_sft_jsonl(f)
        except ValueError as e:  # a malformed row: the reader names the file and line
            if isinstance(e, DiffucoderError):
                raise
            raise InputError(str(e)) from None
        records.extend(got)
        sources += [f"file:{f}"] * len(got)
    records.extend(parse_record(r, f"sft_records[{i}]") for i, r in enumerate(sft_records))
    sources += ["records"] * len(sft_records)
    if cfg.sft.synthetic_tasks > 0:
        for tier, rec in _synthetic_records(cfg.sft.synthetic_tasks, cfg.seed, cfg.sft.synthetic_tiers,
                                            cfg.sft.synthetic_prompt_format):
            records.append(rec)
            sources.append(f"synthetic:{tier}")
    if not records:
        raise ConfigError("task 'sft' has no examples: set sft.files or sft.synthetic_tasks (or pass sft_records)")
    examples = encode_examples(records, tok, system_prompt=cfg.sft.system_prompt)
    answer_length = 0
    if cfg.sft.packing:
        answer_length = cfg.sft.pack_answer_length
        if answer_length is None:  # the longest answer (of those that fit at all) plus one pad target
            answer_length = 1 + max((len(e.answer_ids) for e in examples if fits(e, cfg.sft.max_length)), default=0)
    kept = [(r, e, src) for r, e, src in zip(records, examples, sources) if fits(e, cfg.sft.max_length, answer_length)]
    dropped = len(examples) - len(kept)
    if not kept:
        raise ConfigError(f"none of the {len(examples)} SFT examples fits sft.max_length={cfg.sft.max_length} "
                          f"(prompt + answer + one pad token); raise it", ["sft.max_length"])
    train, held, train_sources, held_sources = [], [], [], []
    for r, e, src in kept:
        key = json.dumps([r.prompt_messages, r.answer])
        out, out_src = (held, held_sources) if is_heldout(key, cfg.sft.heldout_fraction) else (train, train_sources)
        out.append((e.prompt_ids, e.answer_ids))
        out_src.append(src)
    if not train:
        train, held, train_sources = held, [], held_sources
    desc = {"examples": len(records), "dropped_too_long": dropped, "train_examples": len(train),
            "heldout_examples": len(held), "max_length": cfg.sft.max_length, "padding": cfg.sft.padding}
    if cfg.sft.packing:
        desc["pack_answer_length"] = answer_length
    if cfg.sft.batch_groups == "source":
        desc["train_sources"] = dict(sorted(collections.Counter(train_sources).items()))
    return {"train": train, "heldout": held, "description": desc, "answer_length": answer_length,
            "train_sources": train_sources}


def _synthetic_records(n: int, seed: int, tiers: Sequence[str], prompt_format: str = "default") -> list:
    """``n`` synthetic programming tasks of ``tiers`` (round-robin) as (tier, SFT record) pairs (diffucoder.tasks:
    generate + to_sft_record), the user message in ``prompt_format``."""
    from diffucoder.data.sft import parse_record

    try:
        import diffucoder.tasks as tasks
    except ImportError as e:  # pragma: no cover - depends on the tasks package
        raise ConfigError(f"sft.synthetic_tasks needs diffucoder.tasks ({e})") from None
    gen = getattr(tasks, "generate_tasks", None)
    to_rec = getattr(tasks, "to_sft_record", None)
    if gen is None or to_rec is None:
        raise ConfigError("sft.synthetic_tasks needs diffucoder.tasks.generate_tasks and to_sft_record")
    try:
        tiers = tasks.check_tiers(tiers)
    except ValueError as e:
        raise ConfigError(f"sft.synthetic_tiers: {e}") from None
    return [(t.tier, parse_record(to_rec(t, prompt_format=prompt_format), f"synthetic task {i}"))
            for i, t in enumerate(gen(n, "train", seed, tiers))]


def corpus_texts(cfg: TrainConfig, extra_texts: Sequence[str] = ()) -> list[str]:
    """The documents of ``cfg.data`` (its sources, exclusions and inline texts) followed by ``extra_texts``."""
    from diffucoder.data.packing import load_texts

    return load_texts(cfg.data.corpus, list(cfg.data.extra_texts) + list(extra_texts), cfg.data.max_documents,
                      cfg.data.stdlib_exclude)


def _synthetic_solutions(n: int, seed: int, questions: bool = False) -> list[str]:
    """Canonical solutions of ``n`` train-split synthetic tasks (headed by their questions as comments when
    ``questions``), as pretraining documents."""
    if n <= 0:
        return []
    from diffucoder.tasks import iter_solution_texts

    return list(iter_solution_texts(n, seed=seed, split="train", with_question=questions))


def build_model(cfg: TrainConfig, tok, device: torch.device) -> DreamModel:
    """A fresh model from a preset (initialised from the run's seed) or the ``init_from`` folder."""
    if cfg.model.init_from is not None:
        model = DreamModel.from_pretrained(cfg.model.init_from, torch_dtype=torch.float32,
                                           mask_token_id=tok.mask_token_id)
        if model.config.vocab_size < tok.vocab_size:
            raise ConfigError(f"{cfg.model.init_from}: vocab_size {model.config.vocab_size} is smaller than the "
                              f"tokenizer's {tok.vocab_size}")
        for k, v in cfg.model.overrides.items():
            setattr(model.config, k, v)
        model.train()
    else:
        overrides = dict(mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         shift_logits=cfg.model.shift_logits, max_position_embeddings=max(
                             2048, cfg.data.seq_len, cfg.sft.max_length))
        overrides.update(cfg.model.overrides)
        mcfg = DreamConfig.preset(cfg.model.preset, vocab_size=tok.vocab_size, **overrides)
        with torch.device("meta"):
            model = DreamModel(mcfg, init_weights=False)
        model.to_empty(device="cpu")
        model.init_weights(generator=generator(cfg.seed, "init"))
    model.model.gradient_checkpointing = cfg.model.gradient_checkpointing
    return model.to(device)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights), not norms or biases."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(objective: nn.Module, data: Data, cfg: TrainConfig, model_cfg: DreamConfig, info: D.DistInfo,
             autocast: Any) -> dict[str, float]:
    """Held-out ELBO with fixed rows and noise (comparable across evaluations); sums reduced over ranks.

    Returns ``elbo_per_token`` (sum of CE/t over maskable positions: the negative ELBO per token, an upper bound
    on the NLL, nats), ``masked_ce`` (plain CE per masked token) and ``unigram_masked_ce`` (the unigram model's
    CE on the same masked tokens: the baseline).
    """
    held = data.heldout
    if held is None or len(held) == 0:
        return {}
    n = min(cfg.eval.num_sequences, len(held))
    idx_all = list(range(n))
    t_all = torch.linspace(cfg.diffusion.eps, 1.0, n + 2)[1:-1]  # deterministic, evenly spread t
    mine = idx_all[info.rank::info.world_size]
    sums = torch.zeros(5, dtype=torch.float64)  # wce, ce, n_masked, n_maskable, unigram ce
    was_training = objective.training
    objective.eval()
    length = held.row_length(idx_all)
    most = -(-n // info.world_size)  # every rank runs the same number of forwards (FSDP needs it)
    for start in range(0, most, cfg.eval.batch_size):
        chunk = mine[start:start + cfg.eval.batch_size]
        if not chunk:  # keep collectives in step on ranks with no rows (FSDP)
            chunk, weight = idx_all[:1], 0.0
        else:
            weight = 1.0
        x0, prompt_len = held.rows(chunk, length)
        rows = noise_rows(x0, prompt_len, t_all[chunk], [(cfg.seed, "eval", i) for i in chunk],
                          mask_token_id=model_cfg.mask_token_id, pad_token_id=model_cfg.pad_token_id or 0,
                          shift=model_cfg.shift_logits, diff=_eval_diffusion(cfg), step=0).to(info.device)
        with autocast():
            wce, ce, nm, nk = objective(rows.xt, rows.x0, rows.is_masked, rows.t, rows.maskable,
                                        rows.attention_mask)
        uni = -data.vocab_log_probs[rows.x0[rows.is_masked].cpu()].double().sum()
        sums += weight * torch.stack([wce.double().cpu(), ce.double().cpu(), nm.double().cpu(),
                                      nk.double().cpu(), uni])
    objective.train(was_training)
    sums = D.all_reduce_sum(sums.to(info.device) if info.device.type == "cuda" else sums, info).cpu()
    wce, ce, nm, nk, uni = sums.tolist()
    return {"elbo_per_token": wce / max(nk, 1), "masked_ce": ce / max(nm, 1),
            "unigram_masked_ce": uni / max(nm, 1), "masked_tokens": nm}


def _eval_diffusion(cfg: TrainConfig):
    from dataclasses import replace

    # held-out ELBO of the bidirectional model: no truncation, prefix or annealing
    return replace(cfg.diffusion, anneal_steps=0, random_truncation_prob=0.0, clean_prefix_prob=0.0)


# ------------------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------------------
class _Metrics:
    def __init__(self, path: Path, active: bool, resume_step: int | None, tensorboard: bool) -> None:
        self.path, self.active = path, active
        self.tb = None
        if not active:
            return
        if resume_step is not None and path.is_file():  # drop lines from after the checkpoint
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None and path.exists():
            path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ConfigError(f"logging.tensorboard needs the tensorboard package ({e})") from None
            self.tb = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _full_model(objective: nn.Module, info: D.DistInfo, fsdp: bool) -> DreamModel | None:
    """The unwrapped model with full weights on rank 0 (gathered under FSDP); None elsewhere under FSDP."""
    inner = objective.module if hasattr(objective, "module") and not fsdp else objective
    model = inner.model
    if not (fsdp and info.distributed):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not info.is_main:
        return None
    with torch.device("meta"):
        copy = DreamModel(model.config, init_weights=False)
    copy.load_state_dict(state, assign=True)
    copy.tie_weights()
    return copy


def _optimizer_state(optimizer, objective, info: D.DistInfo, fsdp: bool) -> dict | None:
    if fsdp and info.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(objective.model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def _load_optimizer_state(optimizer, objective, state: dict, info: D.DistInfo, fsdp: bool) -> None:
    if fsdp and info.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(objective.model, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


# Keys that cannot change what a run computes (where it runs, what it prints, how often it saves or
# evaluates, how a step's global batch is cut into micro-batches: every row's length, noise level and mask are
# functions of (seed, step, position), see ``step_rows``): they may differ between the invocations of one run.
# Every other key is part of the run.
TRAIN_OPERATIONAL = ("run_dir", "resume", "logging.*", "runtime.threads", "runtime.device", "runtime.compile",
                     "checkpoint.every", "checkpoint.keep_last", "optim.max_minutes", "optim.micro_batch_size",
                     "eval.every", "eval.batch_size")
# Keys a resumed run cannot take up even when a change is allowed: the checkpoint's weights and the run's saved
# tokenizer were made with them.
TRAIN_FIXED = ("task", "seed", "tokenizer.*", "model.preset", "model.overrides*", "model.shift_logits",
               "model.init_from")


def preflight(cfg: TrainConfig) -> Path | None:
    """Check everything ``train`` reads before anything is written (the run folder, the resume target, the
    tokenizer, the starting checkpoint, the SFT files and corpus sources); returns the checkpoint to resume
    from (None: a fresh start). Raises ConfigError / CheckpointError / InputError naming the problem."""
    from diffucoder.model.checkpoint import read_config, weight_files
    from diffucoder.rundir import check_run_dir

    run_dir = check_run_dir(cfg.run_dir, "run_dir")
    if cfg.runtime.device != "auto" and cfg.runtime.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device is {cfg.runtime.device!r} but CUDA is not available on this machine "
                          f"(use cpu or auto)", ["runtime.device"])
    if cfg.tokenizer.path is not None:
        tp = Path(cfg.tokenizer.path)
        if not (tp.is_file() or (tp / "tokenizer.json").is_file()):
            raise ConfigError(f"tokenizer.path: {tp} is neither a tokenizer.json nor a folder holding one",
                              ["tokenizer.path"])
    if cfg.model.init_from is not None:
        src = Path(cfg.model.init_from)
        read_config(src)  # CheckpointError naming the folder / config.json
        weight_files(src)
    if cfg.task == "sft":
        for f in cfg.sft.files:
            if not Path(f).is_file():
                raise ConfigError(f"sft.files: {f}: {'is a folder, not' if Path(f).is_dir() else 'no such'} "
                                  f"jsonl file", ["sft.files"])
    else:
        for src_name in cfg.data.corpus:
            if src_name != "stdlib" and not Path(src_name).exists():
                raise ConfigError(f"data.corpus: {src_name!r} is not 'stdlib' and no such file or folder exists",
                                  ["data.corpus"])
    if cfg.resume == "auto":
        return latest_checkpoint(run_dir)
    if cfg.resume == "never":
        if list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir}: holds checkpoints but resume is 'never'; choose another run_dir or "
                              f"resume=auto", ["resume"])
        return None
    ckpt = Path(cfg.resume)
    if not (ckpt / "trainer_state.pt").is_file():
        raise ConfigError(f"resume: {ckpt} is not a checkpoint folder (no trainer_state.pt)", ["resume"])
    return ckpt


def train(config: TrainConfig, *, tokenizer: Any = None, extra_texts: Sequence[str] = (),
          sft_records: Sequence[dict] = (), allow_config_change: bool = False) -> TrainResult:
    """Run (or resume) the training described by ``config``; see the module docstring.

    ``tokenizer``: a :class:`~diffucoder.tokenizer.DiffuTokenizer` to use instead of the configured one;
    ``extra_texts``: more pretraining documents (e.g. synthetic-task solutions) appended to ``data.corpus``;
    ``sft_records``: more SFT examples as dicts (``messages`` or ``prompt``/``completion``).

    Into a run folder that already holds a run (its ``config.yaml``), a config that differs in any key outside
    ``TRAIN_OPERATIONAL`` is refused with the changed keys named, unless ``allow_config_change`` (then the
    change is logged in ``config_changes.jsonl``). Nothing is written before these checks pass.
    """
    from diffucoder.rundir import check_changes, config_changes, log_changes, note, read_saved

    cfg = config
    cfg.validate()
    t_start = time.time()
    ckpt_path = preflight(cfg)
    run_dir = Path(cfg.run_dir)
    saved_file = run_dir / "config.yaml"
    saved = read_saved(saved_file)
    changes = (config_changes(saved, cfg.to_dict(), TRAIN_OPERATIONAL, defaults=TrainConfig().to_dict())
               if saved is not None else [])
    # an earlier attempt that trained nothing (no checkpoint, no final model) holds nothing a change could spoil
    trained = ckpt_path is not None or bool(list_checkpoints(run_dir)) or (run_dir / "final" / "config.json").is_file()
    check_changes(changes, run_dir, saved_file, allow=allow_config_change or not trained, what="training run",
                  fixed=TRAIN_FIXED if ckpt_path is not None else (), error=ConfigError)
    info = D.init_distributed(cfg.runtime.device)
    if cfg.runtime.threads is not None:
        torch.set_num_threads(cfg.runtime.threads)
    elif info.local_world_size > 1 and info.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))
    o = cfg.optim
    if o.global_batch_size % info.world_size or (o.global_batch_size // info.world_size) % o.micro_batch_size:
        raise ConfigError(f"optim.global_batch_size ({o.global_batch_size}) must split into {info.world_size} "
                          f"rank(s) x micro-batches of {o.micro_batch_size}",
                          ["optim.global_batch_size", "optim.micro_batch_size"])
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if changes and ckpt_path is None:  # a fresh start under new settings: drop what the old ones derived
            import shutil

            shutil.rmtree(run_dir / "tokenizer", ignore_errors=True)
            (run_dir / "data.pt").unlink(missing_ok=True)
        dump_config(cfg, saved_file)
        log_changes(run_dir, changes, f"resume from {ckpt_path}" if ckpt_path else "fresh start")
    D.barrier(info)

    # -- tokenizer, data, model ------------------------------------------------------------------------------
    if tokenizer is not None and info.is_main and not (run_dir / "tokenizer" / "tokenizer.json").is_file():
        from diffucoder.model import atomic_directory

        with atomic_directory(run_dir / "tokenizer") as tmp:
            tokenizer.save_pretrained(tmp)

    tok = build_tokenizer(cfg, run_dir, info, lambda: corpus_texts(cfg, extra_texts))
    data = build_data(cfg, tok, run_dir, info, extra_texts, sft_records)
    model = build_model(cfg, tok, info.device)
    mcfg = model.config
    if mcfg.mask_token_id is None:
        raise ConfigError("the model has no mask_token_id")
    pad_id = tok.pad_token_id

    loaded = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if loaded is not None:
        model.load_state_dict({k: v.to(info.device) for k, v in loaded.model_state.items()})
        model.tie_weights()
    if cfg.runtime.compile:
        model.model.forward = torch.compile(model.model.forward)  # type: ignore[method-assign]
    objective = D.wrap(DiffusionObjective(model, cfg.diffusion.loss_weighting), info, cfg.runtime.fsdp, (DecoderLayer,))
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas), eps=cfg.optim.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.optim.steps, cfg.optim.min_lr_ratio))
    start_step, tokens_seen, examples_seen = 0, 0, 0
    if loaded is not None and loaded.trainer_state.get("seed", cfg.seed) != cfg.seed:
        raise ConfigError(f"{loaded.path} was written with seed {loaded.trainer_state['seed']}, the config says "
                          f"{cfg.seed}: resuming would not continue the same run (use another run_dir)")
    if loaded is not None:
        _load_optimizer_state(optimizer, objective, loaded.trainer_state["optimizer"], info, cfg.runtime.fsdp)
        scheduler.load_state_dict(loaded.trainer_state["scheduler"])
        start_step = loaded.step
        tokens_seen = int(loaded.trainer_state.get("tokens_seen", 0))
        if info.is_main:
            note(f"resuming from step {start_step} of {cfg.optim.steps} ({loaded.path})"
                 if start_step < cfg.optim.steps else
                 f"{run_dir}: already at step {start_step} of {cfg.optim.steps} ({loaded.path}); nothing left to "
                 f"train (raise optim.steps, with {ALLOW_FLAG}, to continue)")
        # checkpoints from before packing did not record it; there, one example was one row
        examples_seen = int(loaded.trainer_state.get("examples_seen", start_step * cfg.optim.global_batch_size))
    del loaded

    o = cfg.optim
    per_rank = o.global_batch_size // info.world_size
    order = BatchOrder(len(data.train), o.global_batch_size, cfg.seed,
                       groups=data.train_sources if cfg.sft.batch_groups == "source" else None)
    use_bf16 = cfg.runtime.precision == "bf16"

    def autocast():
        return torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    metrics = _Metrics(run_dir / METRICS, info.is_main, start_step if ckpt_path else None, cfg.logging.tensorboard)
    unigram = None
    if info.is_main and ckpt_path is not None:
        metrics.write({"step": start_step, "event": "resume", "checkpoint": str(ckpt_path)})
    if info.is_main and start_step == 0:
        metrics.write({"step": 0, "event": "start", "params": model.num_parameters(),
                       "non_embedding_params": model.num_parameters(exclude_embeddings=True),
                       "world_size": info.world_size, **{f"data/{k}": v for k, v in data.description.items()}})

    def run_eval(step: int) -> dict[str, float]:
        ev = evaluate(objective, data, cfg, mcfg, info, autocast)
        if ev:
            metrics.write({"step": step, **{f"eval/{k}": v for k, v in ev.items()}})
        return ev

    bar = None
    if info.is_main and cfg.logging.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=o.steps, initial=start_step, desc=f"{cfg.task} {run_dir.name}", unit="step",
                   dynamic_ncols=True)
    last_loss: float | None = None
    eval_history: list[dict[str, float]] = []
    last_eval: dict[str, float] = {}
    window_tokens, window_t0 = 0, time.time()
    loss_acc = torch.zeros(4, dtype=torch.float64)  # wce, ce, n_masked, denominator over the logging window
    step = start_step
    objective.train()
    try:
        t_loop = time.time()  # the time budget counts training, not tokenizer/data preparation
        time_up = False
        while step < o.steps and not time_up:
            # ---- build this rank's micro-batches of the global batch ----
            gidx = order.indices(step)
            cond_p = condition_probability(step, cfg.sft.progressive_condition_steps) if cfg.task == "sft" else 1.0
            lo = info.rank * per_rank
            built = step_rows(data.train, gidx, list(range(lo, lo + per_rank)), o.micro_batch_size, seed=cfg.seed,
                              step=step, diff=cfg.diffusion, mask_token_id=mcfg.mask_token_id, pad_token_id=pad_id,
                              shift=mcfg.shift_logits, condition_prob=cond_p)
            micro = [r.to(info.device) for r in built.micro]
            length = built.length
            counts = torch.tensor([sum(int(r.is_masked.sum()) for r in micro),
                                   sum(int(r.maskable.sum()) for r in micro)], dtype=torch.float64)
            counts = D.all_reduce_sum(counts.to(info.device), info).cpu()
            denom = float(counts[0] if cfg.diffusion.normalization == "masked_tokens" else counts[1])
            denom = max(denom, 1.0)
            # ---- forward / backward ----
            wce_sum = torch.zeros((), dtype=torch.float64)
            ce_sum = torch.zeros((), dtype=torch.float64)
            for i, r in enumerate(micro):
                sync = i == len(micro) - 1
                ctx = objective.no_sync() if (not sync and isinstance(objective, nn.parallel.DistributedDataParallel)) \
                    else contextlib.nullcontext()
                if cfg.runtime.fsdp and info.distributed:
                    objective.set_requires_gradient_sync(sync)
                with ctx:
                    with autocast():
                        wce, ce, _, _ = objective(r.xt, r.x0, r.is_masked, r.t, r.maskable, r.attention_mask,
                                                  r.position_ids)
                    (wce * (info.world_size / denom)).backward()
                wce_sum += wce.detach().double().cpu()
                ce_sum += ce.double().cpu()
            grad_norm = None
            if o.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
                grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_tokens = o.global_batch_size * length
            tokens_seen += step_tokens
            examples_seen += built.examples
            window_tokens += step_tokens
            loss_acc += torch.stack([wce_sum, ce_sum, counts[0], torch.tensor(denom, dtype=torch.float64)])
            if o.max_minutes is not None:  # every rank stops at the same step
                late = torch.tensor([float(time.time() - t_loop > 60 * o.max_minutes)])
                time_up = float(D.all_reduce_sum(late.to(info.device), info).sum()) > 0
            last = step == o.steps or time_up
            # ---- logging ----
            if step % cfg.logging.every == 0 or last:
                red = D.all_reduce_sum(loss_acc[:2].to(info.device), info).cpu()
                loss = float(red[0] / loss_acc[3])
                mce = float(red[1] / max(float(loss_acc[2]), 1.0))
                dt = max(time.time() - window_t0, 1e-9)
                last_loss = loss
                row = {"step": step, "loss": loss, "masked_ce": mce, "lr": scheduler.get_last_lr()[0],
                       "grad_norm": grad_norm, "tokens_per_s": window_tokens / dt, "tokens_seen": tokens_seen,
                       "examples_seen": examples_seen, "epoch": order.epoch(step), "elapsed_s": time.time() - t_start}
                metrics.write(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{window_tokens / dt:.0f}")
                loss_acc.zero_()
                window_tokens, window_t0 = 0, time.time()
            if bar is not None:
                bar.update(1)
            if cfg.eval.every and step % cfg.eval.every == 0 and not last:
                last_eval = run_eval(step)
                if last_eval:
                    eval_history.append({"step": step, **last_eval})
                    if bar is not None:
                        bar.write(f"step {step}: held-out masked CE {last_eval['masked_ce']:.3f} "
                                  f"(unigram {last_eval['unigram_masked_ce']:.3f}), "
                                  f"ELBO/token {last_eval['elbo_per_token']:.3f}")
                window_t0 = time.time()
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
                _save(run_dir, step, objective, optimizer, scheduler, info, cfg, tokens_seen, examples_seen)
                window_t0 = time.time()
        # ---- end of run ----
        if cfg.checkpoint.every and step % cfg.checkpoint.every != 0 and step > start_step:
            # resumable / extendable
            _save(run_dir, step, objective, optimizer, scheduler, info, cfg, tokens_seen, examples_seen)
        last_eval = run_eval(step) or last_eval
        if last_eval:
            eval_history.append({"step": step, **last_eval})
            unigram = last_eval["unigram_masked_ce"]
        final_model = _full_model(objective, info, cfg.runtime.fsdp)
        final_path = None
        if info.is_main:
            final_path = run_dir / "final"
            final_model.save_pretrained(final_path, tokenizer=tok)
            metrics.write({"step": step, "event": "end", "elapsed_s": time.time() - t_start,
                           "train_s": time.time() - t_loop, "stopped_by_time": time_up,
                           "tokens_seen": tokens_seen, "examples_seen": examples_seen, "final": str(final_path)})
        D.barrier(info)
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
    return TrainResult(run_dir=run_dir, final_path=final_path, steps=step, tokens_seen=tokens_seen,
                       examples_seen=examples_seen,
                       final_loss=last_loss, eval=last_eval, eval_history=eval_history, unigram_baseline=unigram,
                       elapsed_s=time.time() - t_start,
                       resumed_from=start_step if ckpt_path is not None else None,
                       stopped_by_time=bool(time_up))


def _save(run_dir: Path, step: int, objective: nn.Module, optimizer, scheduler, info: D.DistInfo,
          cfg: TrainConfig, tokens_seen: int, examples_seen: int) -> None:
    model = _full_model(objective, info, cfg.runtime.fsdp)
    opt_state = _optimizer_state(optimizer, objective, info, cfg.runtime.fsdp)
    if info.is_main:
        save_checkpoint(run_dir, step, model, {"optimizer": opt_state, "scheduler": scheduler.state_dict(),
                                               "tokens_seen": tokens_seen, "examples_seen": examples_seen,
                                               "seed": cfg.seed,
                                               "world_size": info.world_size}, cfg.checkpoint.keep_last)
    D.barrier(info)
