"""The evaluation harness: generate samples (resumably), score them in the sandbox (resumably), report pass@k.

Files in the output folder:

- ``samples.jsonl``: EvalPlus's format, one line per sample: ``{"task_id", "solution"}`` (the sanitised program)
  plus ``"raw"`` (the model's continuation, unsanitised) and ``"sample_index"``. ``evalplus.evaluate`` reads it.
- ``eval_cache.jsonl``: one verdict per scored (task, solution), appended as each finishes; an interrupted run
  picks up from here without re-running anything.
- ``results.json``: pass@k (base and, for EvalPlus datasets, plus), per-task counts and statuses, the dataset's
  source and SHA-256, the samples file's SHA-256, and every setting (generation settings included).

Generation goes through a plain callable ``generate(prompts: list[str]) -> list[str]`` (one continuation per
prompt), so any model can be plugged in: ``model_generate_fn`` builds one from a ``DreamModel`` checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from diffucoder.evaluation.datasets import Dataset, Task, file_sha256
from diffucoder.evaluation.metrics import pass_at_k
from diffucoder.evaluation.prompts import PromptBuilder
from diffucoder.evaluation.sanitize import sanitize

GenerateFn = Callable[[list[str]], list[str]]


@dataclass
class EvalSettings:
    """Everything that determines a result (written to results.json)."""

    n_samples: int = 1
    ks: tuple[int, ...] = (1,)
    prompt_style: str = "base"
    batch_size: int = 8
    """Prompts per ``generate`` call."""
    workers: int | None = None
    timeout_scale: float = 1.0
    """Multiplies every task's time limits (slow machines)."""
    memory_mb: int = 4096
    """Address-space limit per program (EvalPlus's default, 4 GiB: some MBPP+ outputs are hundreds of MB)."""
    task_ids: list[str] | None = None
    """Evaluate only these tasks (else every task must have samples)."""
    generation: dict[str, Any] = field(default_factory=dict)
    """Model and decoding settings of the generate callable, recorded verbatim."""

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if any(k < 1 for k in self.ks):
            raise ValueError(f"every k must be >= 1, got {self.ks}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.timeout_scale <= 0:
            raise ValueError(f"timeout_scale must be > 0, got {self.timeout_scale}")


@dataclass
class EvalReport:
    dataset: str
    pass_at_k: dict[str, dict[str, float]]
    """{"base": {"pass@1": ...}, "plus": {...}} ("plus" only for EvalPlus datasets)."""
    n_tasks: int
    n_samples: int
    results_path: Path
    per_task: dict[str, dict[str, Any]]


# ----------------------------------------------------------------------------------------------------------------
# jsonl helpers (append-only, crash-tolerant)


def _read_jsonl_tolerant(path: Path) -> list[dict]:
    """Rows of a jsonl that may end in a half-written line (an interrupted run): that line is dropped and the file
    truncated to its last complete line, so appending continues cleanly."""
    if not path.exists():
        return []
    rows, good_end = [], 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    for line in data.split(b"\n"):
        end = pos + len(line) + 1
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if end >= len(data):  # only the last line may be torn
                    break
                raise ValueError(f"{path}: corrupt line at byte {pos}") from None
        good_end = min(end, len(data))
        pos = end
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


class _Appender:
    def __init__(self, path: Path):
        self.f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# ----------------------------------------------------------------------------------------------------------------
# Generation


def generate_samples(dataset: Dataset, generate: GenerateFn, out_dir: str | Path, settings: EvalSettings,
                     progress: bool = True) -> Path:
    """Write ``n_samples`` samples per task to ``out_dir/samples.jsonl``, continuing an interrupted run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.jsonl"
    builder = PromptBuilder(settings.prompt_style)
    tasks = _selected(dataset, settings)
    have: dict[str, int] = {}
    for row in _read_jsonl_tolerant(path):
        have[row["task_id"]] = have.get(row["task_id"], 0) + 1
    todo = [(t, i) for t in tasks for i in range(have.get(t.task_id, 0), settings.n_samples)]
    if not todo:
        return path
    writer = _Appender(path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"generate {dataset.name}")
    try:
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start:start + settings.batch_size]
            prompts = [builder.build(t.prompt) for t, _ in batch]
            outs = generate(prompts)
            if not isinstance(outs, list) or len(outs) != len(prompts) or not all(isinstance(o, str) for o in outs):
                raise TypeError(f"generate must return one string per prompt ({len(prompts)}), got {outs!r:.100}")
            for (task, idx), cont in zip(batch, outs):
                raw = builder.solution_text(task.prompt, cont)
                writer.write({"task_id": task.task_id, "sample_index": idx,
                              "solution": sanitize(raw, task.entry_point or None), "raw": cont})
            if bar is not None:
                bar.update(len(batch))
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return path


# ----------------------------------------------------------------------------------------------------------------
# Scoring


def _selected(dataset: Dataset, settings: EvalSettings) -> list[Task]:
    if settings.task_ids is None:
        return dataset.tasks
    by_id = dataset.by_id()
    missing = [t for t in settings.task_ids if t not in by_id]
    if missing:
        raise ValueError(f"unknown task ids for {dataset.name}: {missing[:5]}")
    return [by_id[t] for t in settings.task_ids]


def load_samples(path: str | Path, dataset: Dataset, settings: EvalSettings) -> dict[str, list[str]]:
    """Solutions per task from an EvalPlus-format jsonl (``solution``, or ``completion`` appended to the prompt)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples file not found: {path}")
    by_id = dataset.by_id()
    out: dict[str, list[str]] = {}
    for n, row in enumerate(_read_jsonl_tolerant(path), 1):
        tid = row.get("task_id")
        if tid not in by_id:
            if settings.task_ids is not None:
                continue  # evaluating a subset: other tasks' samples are ignored
            raise ValueError(f"{path}:{n}: task_id {tid!r} is not in {dataset.name}")
        if isinstance(row.get("solution"), str):
            sol = row["solution"]
        elif isinstance(row.get("completion"), str):
            sol = by_id[tid].prompt + row["completion"]
        else:
            raise ValueError(f"{path}:{n}: a sample needs a 'solution' or 'completion' string")
        out.setdefault(tid, []).append(sol)
    wanted = [t.task_id for t in _selected(dataset, settings)]
    missing = [t for t in wanted if t not in out]
    if missing:
        raise ValueError(f"{path}: no samples for {len(missing)} task(s), e.g. {missing[:5]} (every task must "
                         "appear, as in EvalPlus; or restrict with task_ids)")
    return {t: out[t] for t in wanted}


def _key(task_id: str, solution: str, dataset_sha: str, settings: EvalSettings) -> str:
    h = hashlib.sha256()
    for part in (dataset_sha, task_id, solution, str(settings.timeout_scale), str(settings.memory_mb)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def score_samples(dataset: Dataset, samples: dict[str, list[str]], out_dir: str | Path, settings: EvalSettings,
                  pool: Any = None, progress: bool = True) -> dict[str, list[dict]]:
    """Verdicts per task, one per sample, in sample order; cached in ``out_dir/eval_cache.jsonl``."""
    from diffucoder.execution import SandboxPool

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "eval_cache.jsonl"
    cache = {row["key"]: row for row in _read_jsonl_tolerant(cache_path)}
    by_id = dataset.by_id()
    todo: dict[str, tuple[Task, str]] = {}
    for tid, sols in samples.items():
        for sol in sols:
            k = _key(tid, sol, dataset.sha256, settings)
            if k not in cache:
                todo[k] = (by_id[tid], sol)
    if todo:
        own_pool = pool is None
        pool = pool or SandboxPool(workers=settings.workers)
        keys = list(todo)
        jobs = []
        for k in keys:
            task, sol = todo[k]
            job = task.job(sol, timeout_s=task.timeout_s * settings.timeout_scale, memory_mb=settings.memory_mb)
            if job.test_time_limits is not None:
                job.test_time_limits = [x * settings.timeout_scale for x in job.test_time_limits]
            jobs.append(job)
        writer = _Appender(cache_path)
        try:
            for i, r in pool.imap_unordered(jobs, progress=f"score {dataset.name}" if progress else False):
                task, _ = todo[keys[i]]
                nb = task.n_base_tests if task.n_base_tests is not None else len(task.tests)
                row = {"key": keys[i], "task_id": task.task_id, "status": r.status,
                       "base": bool(all(r.tests_passed[:nb]) and (nb > 0 or r.passed)),
                       "plus": bool(r.passed), "error": r.error[:300], "wall_s": round(r.wall_s, 4),
                       "isolation": r.isolation}
                if task.n_base_tests is None:
                    row["base"] = row["plus"]
                cache[keys[i]] = row
                writer.write(row)
        finally:
            writer.close()
            if own_pool:
                pool.close()
    return {tid: [cache[_key(tid, s, dataset.sha256, settings)] for s in sols] for tid, sols in samples.items()}


def summarize(dataset: Dataset, verdicts: dict[str, list[dict]], settings: EvalSettings) -> tuple[dict, dict]:
    evalplus = any(t.n_base_tests is not None for t in dataset.tasks)
    per_task, ns, cb, cp = {}, [], [], []
    for tid, vs in verdicts.items():
        n, b, p = len(vs), sum(v["base"] for v in vs), sum(v["plus"] for v in vs)
        per_task[tid] = {"n": n, "base_correct": b, "statuses": [v["status"] for v in vs]}
        if evalplus:
            per_task[tid]["plus_correct"] = p
        ns.append(n)
        cb.append(b)
        cp.append(p)
    scores: dict[str, dict[str, float]] = {"base": {}}
    if evalplus:
        scores["plus"] = {}
    for k in settings.ks:
        if all(n >= k for n in ns):
            scores["base"][f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in zip(ns, cb)) / len(ns)
            if evalplus:
                scores["plus"][f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in zip(ns, cp)) / len(ns)
    return scores, per_task


def evaluate(dataset: Dataset, out_dir: str | Path, settings: EvalSettings, *, samples_path: str | Path | None = None,
             generate: GenerateFn | None = None, pool: Any = None, progress: bool = True,
             sanitize_given: bool = False) -> EvalReport:
    """Generate (when ``generate`` is given) or read samples, score them, write ``results.json``."""
    from diffucoder.execution import isolation_level

    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if generate is not None:
        if samples_path is not None:
            raise ValueError("give either samples_path or generate, not both")
        samples_path = generate_samples(dataset, generate, out, settings, progress)
    if samples_path is None:
        raise ValueError("evaluate needs samples_path or a generate callable")
    samples = load_samples(samples_path, dataset, settings)
    if sanitize_given:
        by_id = dataset.by_id()
        samples = {t: [sanitize(s, by_id[t].entry_point or None) for s in ss] for t, ss in samples.items()}
    from diffucoder.execution import SandboxPool

    own_pool = pool is None
    pool = pool or SandboxPool(workers=settings.workers)
    try:
        verdicts = score_samples(dataset, samples, out, settings, pool, progress)
    finally:
        if own_pool:
            pool.close()
    scores, per_task = summarize(dataset, verdicts, settings)
    results = {
        "dataset": dataset.name,
        "dataset_source": dataset.source,
        "dataset_sha256": dataset.sha256,
        "samples_file": str(Path(samples_path).resolve()),
        "samples_sha256": file_sha256(samples_path),
        "n_tasks": len(per_task),
        "pass_at_k": scores,
        "settings": {**asdict(settings), "sanitize_given": sanitize_given, "isolation": isolation_level(),
                     "sandbox": {**asdict(pool.config), "workers": pool.n_workers},
                     "python": platform.python_version(), "platform": platform.platform(),
                     "argv": sys.argv},
        "started_unix": started,
        "finished_unix": time.time(),
        "tasks": per_task,
    }
    path = out / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)
    return EvalReport(dataset.name, scores, len(per_task), sum(len(v) for v in verdicts.values()), path, per_task)


# ----------------------------------------------------------------------------------------------------------------
# A generate callable from a checkpoint


def model_generate_fn(model_path: str | Path, *, max_new_tokens: int = 256, steps: int = 256, alg: str = "entropy",
                      temperature: float = 0.2, top_p: float | None = 0.95, alg_temp: float | None = None,
                      seed: int = 0, device: str = "cpu", dtype: str = "auto",
                      **decoding: Any) -> tuple[GenerateFn, dict[str, Any]]:
    """``generate(prompts) -> continuations`` decoding with ``diffusion_generate`` from a DreamModel checkpoint
    folder (weights + tokenizer.json), and the settings it uses (for results.json). DiffuCoder's settings are the
    defaults: 256 tokens in 256 steps, entropy order, top_p 0.95, temperature 0.2 (base; 0.3-0.4 instruct).
    ``decoding``: further ``diffusion_generate`` options (``top_k``, ``block_length``, ``threshold``,
    ``use_cache``, ``cache_refresh``, ``early_stop``), recorded in the settings too."""
    try:
        from diffucoder.model import DreamModel
        from diffucoder.tokenizer import load_tokenizer
    except ImportError as e:
        raise ImportError(f"--model needs diffucoder.model and diffucoder.tokenizer: {e}") from e
    model_path = Path(model_path)
    if not model_path.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_path}")
    model = DreamModel.from_pretrained(model_path, torch_dtype=dtype).to(device).eval()
    generate = loaded_model_generate_fn(model, load_tokenizer(model_path), max_new_tokens=max_new_tokens, steps=steps,
                                        alg=alg, temperature=temperature, top_p=top_p, alg_temp=alg_temp, seed=seed,
                                        **decoding)
    settings = {"model": str(model_path.resolve()), "max_new_tokens": max_new_tokens, "steps": steps, "alg": alg,
                "temperature": temperature, "top_p": top_p, "alg_temp": alg_temp, "seed": seed, "device": device,
                "dtype": dtype, **decoding}
    return generate, settings


def loaded_model_generate_fn(model: Any, tok: Any, *, max_new_tokens: int = 256, steps: int = 256,
                             alg: str = "entropy", temperature: float = 0.2, top_p: float | None = 0.95,
                             alg_temp: float | None = None, seed: int = 0,
                             context: Callable[[], Any] | None = None, **decoding: Any) -> GenerateFn:
    """``generate(prompts) -> continuations`` for an already loaded DreamModel and its tokenizer: prompts are
    left-padded into one batch and decoded with ``diffusion_generate`` on the model's device (arguments as in
    :func:`model_generate_fn`; ``decoding``: further ``diffusion_generate`` options). ``context``: a factory of a
    context manager entered around each decode (e.g. ``torch.autocast``). Early stop and the pad fill use the
    tokenizer's stop ids (end-of-text, the SFT pad, ``<|im_end|>``)."""
    import contextlib

    import torch

    from diffucoder.sampling import decode_completions, diffusion_generate

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    vocab_limit = getattr(tok, "vocab_size", None)
    stop_ids = tok.stop_token_ids() if hasattr(tok, "stop_token_ids") else None

    def generate(prompts: list[str]) -> list[str]:
        ids = tok.encode_batch(prompts)
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id
        inputs = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        with torch.no_grad(), (context() if context else contextlib.nullcontext()):
            seqs = diffusion_generate(model, inputs, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      steps=steps, alg=alg, temperature=temperature, top_p=top_p,
                                      alg_temp=alg_temp, generator=gen, stop_token_ids=stop_ids,
                                      vocab_limit=vocab_limit if isinstance(vocab_limit, int) else None,
                                      **decoding)
        return decode_completions(tok, seqs, width)

    return generate
