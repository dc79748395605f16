"""The evaluation harness: generate samples (resumably), score them in the sandbox (resumably), report pass@k.

Files in the output folder:

- ``samples.jsonl``: EvalPlus's format, one line per sample: ``{"task_id", "solution"}`` (the sanitised program)
  plus ``"raw"`` (the model's continuation, unsanitised) and ``"sample_index"``. ``evalplus.evaluate`` reads it.
- ``eval_cache.jsonl``: one verdict per scored (task, solution), appended as each finishes; an interrupted run
  picks up from here without re-running anything.
- ``results.json``: pass@k (base and, for EvalPlus datasets, plus), per-task counts and statuses, the dataset's
  source and SHA-256, the samples file's SHA-256, and every setting (generation settings included). A run on a
  subset of the tasks (``task_ids``) writes ``results.tasks-<hash>.json`` beside it instead, never over it.

Timeouts are re-checked before they are cached as final: a machine busy with other work can push a correct
program past its limits (EvalPlus's per-input limits are 4x the canonical solution's time, measured when the
expected outputs were computed). After the first pass, every timed-out sample runs again together with its
task's canonical solution under the same limits. A timeout is final only when the sample times out again while
the canonical solution passes (the limits are fair for this machine now); a sample that passes on the re-check
is judged by that run. When the canonical solution itself runs out of time, the machine is too busy to judge:
after ``RECHECK_ROUNDS`` such rounds the sample counts as a failure in this run, flagged ``unverified``, and is
not cached, so the next run checks it again.

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
from diffucoder.evaluation.prompts import DEFAULT_SYSTEM, PromptBuilder
from diffucoder.evaluation.sanitize import sanitize

from diffucoder.errors import InputError, MissingFileError

GenerateFn = Callable[[list[str]], list[str]]
RECHECK_ROUNDS = 2
"""Re-check rounds for timed-out samples (see the module docstring)."""


@dataclass
class EvalSettings:
    """Everything that determines a result (written to results.json)."""

    n_samples: int = 1
    ks: tuple[int, ...] = (1,)
    prompt_style: str = "base"
    system_prompt: str | None = DEFAULT_SYSTEM
    """System turn of the instruct / chat prompts (None: no system turn, for a model trained without one)."""
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
            raise InputError(f"n_samples must be >= 1, got {self.n_samples}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise InputError(f"every k must be >= 1, got {self.ks}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.timeout_scale <= 0:
            raise InputError(f"timeout_scale must be > 0, got {self.timeout_scale}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if self.task_ids is not None and not self.task_ids:
            raise InputError("task_ids is empty (give at least one task id, or None for all)")


@dataclass
class EvalReport:
    dataset: str
    pass_at_k: dict[str, dict[str, float]]
    """{"base": {"pass@1": ...}, "plus": {...}} ("plus" only for EvalPlus datasets)."""
    n_tasks: int
    n_samples: int
    results_path: Path
    per_task: dict[str, dict[str, Any]]
    dropped_ks: list[int] = field(default_factory=list)
    """k values left out of ``pass_at_k`` because some task has fewer than k samples."""
    unverified_timeouts: int = 0
    """Timeouts that could not be confirmed (the canonical solution also ran out of time): not cached."""


# ----------------------------------------------------------------------------------------------------------------
# jsonl helpers (append-only, crash-tolerant)


def _read_jsonl_tolerant(path: Path, repair: bool = True) -> list[dict]:
    """Rows of a jsonl that may end in a half-written line (an interrupted run of ours): that line is dropped and,
    with ``repair``, the file truncated to its last complete line, so appending continues cleanly. Without
    ``repair`` (a user's file) a corrupt line anywhere is an InputError naming it and nothing is changed."""
    if not path.exists():
        return []
    rows, good_end = [], 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    for lineno, line in enumerate(data.split(b"\n"), 1):
        end = pos + len(line) + 1
        if line.strip():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if repair and end >= len(data):  # only the last line may be torn
                    break
                raise InputError(f"{path}:{lineno}: not valid JSON") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        good_end = min(end, len(data))
        pos = end
    if repair and good_end < len(data):
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
    builder = PromptBuilder(settings.prompt_style, system=settings.system_prompt)
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
        raise InputError(f"unknown task ids for {dataset.name}: {missing[:5]}")
    return [by_id[t] for t in settings.task_ids]


def load_samples(path: str | Path, dataset: Dataset, settings: EvalSettings) -> dict[str, list[str]]:
    """Solutions per task from an EvalPlus-format jsonl (``solution``, or ``completion`` appended to the prompt)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a samples .jsonl file")
    if not path.exists():
        raise MissingFileError(f"{path}: samples file not found")
    by_id = dataset.by_id()
    out: dict[str, list[str]] = {}
    for n, row in enumerate(_read_jsonl_tolerant(path, repair=False), 1):
        tid = row.get("task_id")
        if tid not in by_id:
            if settings.task_ids is not None:
                continue  # evaluating a subset: other tasks' samples are ignored
            raise InputError(f"{path}:{n}: task_id {tid!r} is not in {dataset.name}")
        if isinstance(row.get("solution"), str):
            sol = row["solution"]
        elif isinstance(row.get("completion"), str):
            sol = by_id[tid].prompt + row["completion"]
        else:
            raise InputError(f"{path}:{n}: a sample needs a 'solution' or 'completion' string")
        out.setdefault(tid, []).append(sol)
    wanted = [t.task_id for t in _selected(dataset, settings)]
    missing = [t for t in wanted if t not in out]
    if missing:
        raise InputError(f"{path}: no samples for {len(missing)} task(s), e.g. {missing[:5]} (every task must "
                         "appear, as in EvalPlus; or restrict with task_ids / --tasks)")
    return {t: out[t] for t in wanted}


def _key(task_id: str, solution: str, dataset_sha: str, settings: EvalSettings) -> str:
    h = hashlib.sha256()
    for part in (dataset_sha, task_id, solution, str(settings.timeout_scale), str(settings.memory_mb)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _scaled_job(task: Task, program: str, settings: EvalSettings) -> Any:
    job = task.job(program, timeout_s=task.timeout_s * settings.timeout_scale, memory_mb=settings.memory_mb)
    if job.test_time_limits is not None:
        job.test_time_limits = [x * settings.timeout_scale for x in job.test_time_limits]
    return job


def _verdict_row(key: str, task: Task, r: Any) -> dict[str, Any]:
    nb = task.n_base_tests if task.n_base_tests is not None else len(task.tests)
    row = {"key": key, "task_id": task.task_id, "status": r.status,
           "base": bool(all(r.tests_passed[:nb]) and (nb > 0 or r.passed)),
           "plus": bool(r.passed), "error": r.error[:300], "wall_s": round(r.wall_s, 4),
           "isolation": r.isolation}
    if task.n_base_tests is None:
        row["base"] = row["plus"]
    return row


def _final(row: dict[str, Any]) -> bool:
    """A cached verdict that needs no re-run: anything but a timeout that was never re-checked."""
    return row["status"] != "timeout" or bool(row.get("rechecked"))


def recheck_timeouts(pending: dict[str, dict[str, Any]], todo: dict[str, tuple[Task, str]], pool: Any,
                     settings: EvalSettings, rounds: int = RECHECK_ROUNDS, pause_s: float = 1.0
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Re-run timed-out samples beside their tasks' canonical solutions, under the same limits (module
    docstring). Returns ``(final, unverified)`` verdict rows by cache key: ``final`` ones carry ``rechecked``
    (the round that settled them) and may be cached; ``unverified`` ones timed out while the canonical solution
    did too, in every round."""
    final: dict[str, dict[str, Any]] = {}
    for round_ in range(1, rounds + 1):
        if not pending:
            break
        if round_ > 1:
            time.sleep(pause_s * round_)
        tasks = {todo[k][0].task_id: todo[k][0] for k in pending}
        canon_ids = [tid for tid, t in tasks.items() if t.reference_program.strip()]
        keys = list(pending)
        jobs = [_scaled_job(tasks[tid], tasks[tid].reference_program, settings) for tid in canon_ids]
        jobs += [_scaled_job(todo[k][0], todo[k][1], settings) for k in keys]
        results = pool.map(jobs)
        canon_ok = {tid: r.passed for tid, r in zip(canon_ids, results)}
        still: dict[str, dict[str, Any]] = {}
        for k, r in zip(keys, results[len(canon_ids):]):
            task = todo[k][0]
            row = _verdict_row(k, task, r)
            if r.status != "timeout" or canon_ok.get(task.task_id, True):
                row["rechecked"] = round_
                final[k] = row
            else:
                row["canonical_timed_out"] = True
                still[k] = row
        pending = still
    unverified = {k: {**row, "unverified": True} for k, row in pending.items()}
    return final, unverified


def score_samples(dataset: Dataset, samples: dict[str, list[str]], out_dir: str | Path, settings: EvalSettings,
                  pool: Any = None, progress: bool = True, recheck: bool = True) -> dict[str, list[dict]]:
    """Verdicts per task, one per sample, in sample order; cached in ``out_dir/eval_cache.jsonl``. Timeouts are
    re-checked before they are cached (``recheck``; module docstring): an unconfirmed one is returned with
    ``"unverified": True`` and left out of the cache."""
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
            if k not in cache or (recheck and not _final(cache[k])):
                todo[k] = (by_id[tid], sol)
    verdicts = dict(cache)
    if todo:
        own_pool = pool is None
        pool = pool or SandboxPool(workers=settings.workers)
        keys = list(todo)
        jobs = [_scaled_job(todo[k][0], todo[k][1], settings) for k in keys]
        writer = _Appender(cache_path)
        pending: dict[str, dict[str, Any]] = {}
        try:
            for i, r in pool.imap_unordered(jobs, progress=f"score {dataset.name}" if progress else False):
                row = _verdict_row(keys[i], todo[keys[i]][0], r)
                if recheck and r.status == "timeout":
                    pending[keys[i]] = row
                    continue
                verdicts[keys[i]] = row
                writer.write(row)
            if pending:
                if progress:
                    print(f"re-checking {len(pending)} timed-out sample(s) beside their canonical solutions",
                          file=sys.stderr)
                final, unverified = recheck_timeouts(pending, todo, pool, settings)
                for k, row in final.items():
                    verdicts[k] = row
                    writer.write(row)
                verdicts.update(unverified)
                if unverified:
                    import warnings

                    warnings.warn(f"{len(unverified)} timeout(s) could not be confirmed: the canonical solution "
                                  f"also ran out of time (the machine is too busy to judge). They count as failures "
                                  f"in this run but are not cached, so the next run re-checks them; or raise "
                                  f"--timeout-scale", stacklevel=2)
        finally:
            writer.close()
            if own_pool:
                pool.close()
    return {tid: [verdicts[_key(tid, s, dataset.sha256, settings)] for s in sols] for tid, sols in samples.items()}


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


def dropped_ks(verdicts: dict[str, list[dict]], ks: tuple[int, ...]) -> list[int]:
    """The k values pass@k cannot be computed for: some task has fewer than k samples."""
    fewest = min((len(v) for v in verdicts.values()), default=0)
    return [k for k in ks if k > fewest]


def results_path(out_dir: str | Path, dataset: Dataset, settings: EvalSettings) -> Path:
    """``results.json`` for a run on the whole dataset; ``results.tasks-<hash>.json`` for a subset (so a subset
    run never replaces a full run's results)."""
    out = Path(out_dir)
    ids = settings.task_ids if settings.task_ids is not None else (
        [t.task_id for t in dataset.tasks] if dataset.subset else None)
    if ids is None:
        return out / "results.json"
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:10]
    return out / f"results.tasks-{digest}.json"


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
    dropped = dropped_ks(verdicts, settings.ks)
    if dropped:
        import warnings

        fewest = min(len(v) for v in verdicts.values())
        warnings.warn(f"pass@k needs at least k samples per task and the fewest here is {fewest}: dropped "
                      f"{', '.join(f'k={k}' for k in dropped)} (kept: "
                      f"{', '.join(f'k={k}' for k in settings.ks if k not in dropped) or 'none'})", stacklevel=2)
    unverified = sum(bool(v.get("unverified")) for vs in verdicts.values() for v in vs)
    for tid, vs in verdicts.items():
        per_task[tid]["unverified_timeouts"] = sum(bool(v.get("unverified")) for v in vs)
    results = {
        "dataset": dataset.name,
        "dataset_source": dataset.source,
        "dataset_sha256": dataset.sha256,
        "dataset_release": dataset.release,
        "samples_file": str(Path(samples_path).resolve()),
        "samples_sha256": file_sha256(samples_path),
        "n_tasks": len(per_task),
        "subset": settings.task_ids is not None or dataset.subset,
        "pass_at_k": scores,
        "dropped_ks": dropped,
        "rechecked_timeouts": sum(bool(v.get("rechecked")) for vs in verdicts.values() for v in vs),
        "unverified_timeouts": unverified,
        "settings": {**asdict(settings), "sanitize_given": sanitize_given, "isolation": isolation_level(),
                     "sandbox": {**asdict(pool.config), "workers": pool.n_workers},
                     "python": platform.python_version(), "platform": platform.platform(),
                     "argv": sys.argv},
        "started_unix": started,
        "finished_unix": time.time(),
        "tasks": per_task,
    }
    path = results_path(out, dataset, settings)
    from diffucoder.errors import write_text_atomic

    write_text_atomic(path, json.dumps(results, indent=2))
    return EvalReport(dataset.name, scores, len(per_task), sum(len(v) for v in verdicts.values()), path, per_task,
                      dropped, unverified)


# ----------------------------------------------------------------------------------------------------------------
# A generate callable from a checkpoint


def model_generate_fn(model_path: str | Path, *, max_new_tokens: int = 256, steps: int = 256, alg: str = "entropy",
                      temperature: float = 0.2, top_p: float | None = 0.95, alg_temp: float | None = None,
                      seed: int = 0, device: str = "auto", dtype: str = "auto", threads: int | None = None,
                      **decoding: Any) -> tuple[GenerateFn, dict[str, Any]]:
    """``generate(prompts) -> continuations`` decoding with ``diffusion_generate`` from a DreamModel checkpoint
    folder (weights + tokenizer.json), and the settings it uses (for results.json). DiffuCoder's settings are the
    defaults: 256 tokens in 256 steps, entropy order, top_p 0.95, temperature 0.2 (base; 0.3-0.4 instruct).
    ``device``: "auto" (CUDA when available), "cpu", "cuda[:N]"; ``threads``: CPU threads (default: one for a
    model under 50M parameters, see diffucoder.runtime). ``decoding``: further ``diffusion_generate`` options
    (``top_k``, ``block_length``, ``threshold``, ``use_cache``, ``cache_refresh``, ``early_stop``), recorded in the
    settings too."""
    from diffucoder.model import DreamModel
    from diffucoder.model.checkpoint import read_config
    from diffucoder.runtime import apply_threads, resolve_device
    from diffucoder.tokenizer import load_tokenizer

    model_path = Path(model_path)
    read_config(model_path)  # a CheckpointError naming the folder, before the tokenizer is looked for
    dev = resolve_device(device)
    tok = load_tokenizer(model_path)
    model = DreamModel.from_pretrained(model_path, torch_dtype=dtype).to(dev).eval()
    apply_threads(threads, model, dev)
    generate = loaded_model_generate_fn(model, tok, max_new_tokens=max_new_tokens, steps=steps,
                                        alg=alg, temperature=temperature, top_p=top_p, alg_temp=alg_temp, seed=seed,
                                        **decoding)
    settings = {"model": str(model_path.resolve()), "max_new_tokens": max_new_tokens, "steps": steps, "alg": alg,
                "temperature": temperature, "top_p": top_p, "alg_temp": alg_temp, "seed": seed, "device": str(dev),
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
