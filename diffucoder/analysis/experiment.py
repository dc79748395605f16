"""The decoding-order study of paper section 4, as one function (``diffucoder analyze`` calls it).

For each sampling temperature: decode every prompt (one token per step by default, entropy order, top-p 0.95,
as DiffuCoder), then compute local / global AR-ness@k over the reveal orders, the first-step confidence profile
(entropy sink) and the steps-by-positions reveal heatmap; optionally pass@1 / pass@k of the completions when the
prompts come with tests and the evaluation harness is available.

    result = analyze_decoding_order(model, tokenizer, prompts, temperatures=[0.2, 1.0], max_new_tokens=64)
    result.write(out_dir)          # analysis.json + PNG plots
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffucoder.analysis.ar_ness import ArNessCurves, ar_ness_curves
from diffucoder.analysis.profiles import first_step_profile, reveal_heatmap
from diffucoder.errors import InputError, read_text

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model import DreamModel
    from diffucoder.tokenizer import DiffuTokenizer

# (task_ids, completions per task, ks) -> {"pass@1": ..., "pass@k": ...}
PassAtKFn = Callable[[list[str], list[list[str]], Sequence[int]], dict[str, float]]


@dataclass
class PromptSet:
    """Prompts to decode: ready-to-tokenize texts, with task ids (and tests, for pass@k) when known."""

    name: str
    texts: list[str]
    task_ids: list[str]
    pass_at_k: PassAtKFn | None = None
    """Scores completions when the prompts come from an evaluation set; None otherwise."""


@dataclass
class TemperatureResult:
    temperature: float
    ar_ness: ArNessCurves
    first_step_profile: list[float]
    reveal_heatmap: list[list[float]]
    samples: list[dict[str, str]]
    pass_at_k: dict[str, float] | None = None
    seconds: float = 0.0
    forward_passes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "ar_ness": self.ar_ness.to_dict(),
                "first_step_profile": [round(v, 5) for v in self.first_step_profile],
                "reveal_heatmap": [[round(v, 4) for v in row] for row in self.reveal_heatmap],
                "samples": self.samples, "pass_at_k": self.pass_at_k, "seconds": round(self.seconds, 2),
                "forward_passes": self.forward_passes}


@dataclass
class OrderAnalysis:
    settings: dict[str, Any]
    results: list[TemperatureResult] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per temperature: local / global AR-ness at k = 1 and the largest k, and pass@k when scored."""
        out = {}
        for r in self.results:
            c = r.ar_ness
            row = {f"local@{c.ks[0]}": round(c.local[0], 4), f"global@{c.ks[0]}": round(c.global_[0], 4),
                   f"local@{c.ks[-1]}": round(c.local[-1], 4), f"global@{c.ks[-1]}": round(c.global_[-1], 4)}
            row.update({k: round(v, 4) for k, v in (r.pass_at_k or {}).items()})
            out[f"{r.temperature:g}"] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "summary": self.summary(),
                "results": [r.to_dict() for r in self.results]}

    def write(self, out_dir: str | Path, plots: bool = True) -> list[Path]:
        """Write ``analysis.json`` and (with matplotlib) the PNG plots; returns the paths written."""
        from diffucoder.analysis import plots as P

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "analysis.json"]
        paths[0].write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        if not plots:
            return paths
        model = "/".join(Path(str(self.settings["model"])).parts[-2:]) + ", " if self.settings.get("model") else ""
        tag = f"{model}{self.settings.get('prompts', '')} prompts, alg={self.settings['alg']}, " \
              f"{self.settings['max_new_tokens']} tokens / {self.settings['steps']} steps"
        paths.append(P.plot_ar_ness([(r.temperature, r.ar_ness) for r in self.results], out / "ar_ness.png",
                                    title=tag))
        ylabel = {"entropy": "negative entropy", "topk_margin": "p1 - p2"}.get(self.settings["alg"],
                                                                             "probability of chosen token")
        paths.append(P.plot_first_step_profile([(r.temperature, r.first_step_profile) for r in self.results],
                                               out / "first_step_profile.png", ylabel=ylabel))
        for r in self.results:
            paths.append(P.plot_reveal_heatmap(r.reveal_heatmap, out / f"reveal_heatmap_T{r.temperature:g}.png",
                                               title=f"reveal step by position, T={r.temperature:g}"))
        scored = [r for r in self.results if r.pass_at_k]
        if scored:
            names = sorted(scored[0].pass_at_k, key=lambda n: int(n.split("@")[1]))
            paths.append(P.plot_pass_at_k([r.temperature for r in scored],
                                          {n: [r.pass_at_k[n] for r in scored] for n in names},
                                          out / "pass_at_k.png"))
        return paths


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists to one (B, P) tensor and its attention mask (1 = token)."""
    P = max(len(r) for r in batch)
    ids = torch.full((len(batch), P), pad_id, dtype=torch.long)
    am = torch.zeros((len(batch), P), dtype=torch.long)
    for i, r in enumerate(batch):
        if r:
            ids[i, P - len(r):] = torch.tensor(list(r), dtype=torch.long)
            am[i, P - len(r):] = 1
    return ids, am


def analyze_decoding_order(model: "DreamModel", tokenizer: "DiffuTokenizer", prompts: PromptSet,
                           temperatures: Sequence[float], max_new_tokens: int = 64, steps: int | None = None,
                           alg: str = "entropy", top_p: float | None = 0.95, samples_per_prompt: int = 1,
                           batch_size: int = 8, seed: int = 0, ks: Sequence[int] = tuple(range(1, 11)),
                           pass_ks: Sequence[int] = (1, 5, 10), keep_samples: int = 4, progress: bool = True,
                           ) -> OrderAnalysis:
    """Decode ``prompts`` at each temperature and measure the decoding order (see the module docstring)."""
    from diffucoder.sampling import decode_completions, diffusion_generate

    if not prompts.texts:
        raise InputError("no prompts to analyse")
    if not temperatures:
        raise InputError("give at least one temperature")
    steps = max_new_tokens if steps is None else steps
    encoded = [tokenizer.encode(t) for t in prompts.texts]
    longest = max(len(e) for e in encoded)
    limit = model.config.max_position_embeddings
    if longest + max_new_tokens > limit:
        raise InputError(f"the longest prompt ({longest} tokens) + {max_new_tokens} new tokens exceeds the "
                         f"model's context ({limit}); use fewer new tokens or shorter prompts")
    settings = {"prompts": prompts.name, "num_prompts": len(encoded), "alg": alg, "max_new_tokens": max_new_tokens,
                "steps": steps, "top_p": top_p, "samples_per_prompt": samples_per_prompt, "seed": seed,
                "ks": list(ks), "temperatures": list(temperatures), "eps": 1e-3,
                "note": "AR-ness over reveal orders; the prompt counts as revealed left to right"}
    analysis = OrderAnalysis(settings=settings)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(temperatures) * len(encoded), desc="analyze", unit="prompt")
    for ti, temp in enumerate(temperatures):
        gen = torch.Generator(device=model.device).manual_seed(seed + 1000 * ti)
        traces, texts, owners = [], [], []
        t0 = time.perf_counter()
        passes = 0
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            ids, am = left_pad(chunk, tokenizer.pad_token_id)
            ids, am = ids.to(model.device), am.to(model.device)  # (B, P) on the model's device
            out = diffusion_generate(
                model, ids, attention_mask=am, max_new_tokens=max_new_tokens, steps=steps, alg=alg,
                temperature=float(temp), top_p=top_p, num_return_sequences=samples_per_prompt,
                generator=gen, mask_token_id=tokenizer.mask_token_id, vocab_limit=tokenizer.vocab_size,
                return_dict_in_generate=True)
            traces.append(out.trace)
            passes += out.trace.num_forward_passes
            texts += decode_completions(tokenizer, out.sequences, out.trace.prompt_length)
            owners += [start + i // samples_per_prompt for i in range(len(chunk) * samples_per_prompt)]
            if bar is not None:
                bar.update(len(chunk))
        orders = [tr.order(r) for tr in traces for r in range(tr.batch_size)]
        res = TemperatureResult(
            temperature=float(temp), ar_ness=ar_ness_curves(orders, ks),
            first_step_profile=first_step_profile(traces).tolist(),
            reveal_heatmap=reveal_heatmap(traces).tolist(),
            samples=[{"task_id": prompts.task_ids[owners[i]], "completion": texts[i]}
                     for i in range(min(keep_samples, len(texts)))],
            seconds=time.perf_counter() - t0, forward_passes=passes)
        if prompts.pass_at_k is not None:
            per_task: list[list[str]] = [[] for _ in encoded]
            for owner, text in zip(owners, texts):
                per_task[owner].append(text)
            res.pass_at_k = prompts.pass_at_k(prompts.task_ids, per_task,
                                              sorted({k for k in pass_ks if k <= samples_per_prompt}
                                                     | {samples_per_prompt}))
        analysis.results.append(res)
    if bar is not None:
        bar.close()
    return analysis


# -- prompt sources --------------------------------------------------------------------------------------------
EVAL_SETS = ("humaneval", "humaneval+", "mbpp+", "synthetic")


def _eval_dataset(name: str, limit: int | None, seed: int) -> Any:
    """A ``diffucoder.evaluation`` Dataset; synthetic = held-out rows of ``diffucoder.tasks``."""
    from diffucoder.evaluation.datasets import Dataset, load_dataset, tasks_from_rows

    if name == "synthetic":
        import hashlib

        from diffucoder.tasks import dataset as synthetic_rows

        rows = synthetic_rows("test", n=limit or 32, seed=seed)
        sha = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
        return Dataset("synthetic", tasks_from_rows(rows), f"diffucoder.tasks test split seed {seed}", sha)
    ds = load_dataset(name)
    if limit:
        ds = Dataset(ds.name, ds.tasks[:limit], ds.source, ds.sha256)
    return ds


def load_prompt_set(spec: str, tokenizer: "DiffuTokenizer", style: str | None = None, limit: int | None = None,
                    seed: int = 0, with_tests: bool = False, workers: int | None = None) -> PromptSet:
    """Prompts from ``spec``: an evaluation set (``humaneval``, ``humaneval+``, ``mbpp+``, ``synthetic`` = held-out
    ``diffucoder.tasks``) or a file.

    Evaluation sets are prompted as the evaluation harness prompts them (``diffucoder.evaluation.prompts``):
    ``style`` "base" (complete the task prompt; default for HumanEval / MBPP+), "instruct" (Qwen2.5-Coder's
    instruct prompt with the pre-filled reply) or "chat" (the prompt as a user turn; default for synthetic).
    ``with_tests`` attaches a pass@k scorer that sanitises and runs the completions in the sandbox.

    Files: ``.jsonl`` / ``.json`` rows with a ``prompt`` (optionally ``task_id``), or any other text file as one
    prompt; ``style="chat"`` wraps each in the chat template.
    """
    if spec in EVAL_SETS:
        from diffucoder.evaluation.prompts import PromptBuilder

        ds = _eval_dataset(spec, limit, seed)
        style = style or ("chat" if spec == "synthetic" else "base")
        builder = PromptBuilder(style, chat_template=lambda msgs: tokenizer.apply_chat_template(msgs))
        texts = [builder.build(t.prompt) for t in ds.tasks]
        scorer = _harness_scorer(ds, builder, workers) if with_tests else None
        return PromptSet(spec, texts, [t.task_id for t in ds.tasks], scorer)
    path = Path(spec)
    if not path.is_file():
        what = "is a folder, not a prompt file" if path.is_dir() else "no such file"
        raise InputError(f"--prompts {spec!r}: not one of {list(EVAL_SETS)}, and {what}")
    if with_tests:
        raise InputError(f"pass@k needs an evaluation set ({', '.join(EVAL_SETS)}), not a prompt file")
    if path.suffix in (".jsonl", ".json"):
        raw = read_text(path, "prompt file")
        try:
            rows = json.loads(raw) if path.suffix == ".json" else [json.loads(ln) for ln in raw.splitlines()
                                                                  if ln.strip()]
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        rows = [r if isinstance(r, dict) else {"prompt": r} for r in rows]
        for i, r in enumerate(rows):
            if not isinstance(r.get("prompt"), str):
                raise InputError(f"{path}: row {i} has no string 'prompt'")
        prompts = [r["prompt"] for r in rows]
        ids = [str(r.get("task_id", i)) for i, r in enumerate(rows)]
    else:
        prompts, ids = [read_text(path, "prompt file")], [path.name]
    if not prompts or not any(p.strip() for p in prompts):
        raise InputError(f"{path}: the prompt file holds no prompt")
    if limit:
        prompts, ids = prompts[:limit], ids[:limit]
    if style not in (None, "base", "chat"):
        raise InputError(f"prompt files take style 'base' or 'chat', got {style!r}")
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts] \
        if style == "chat" else prompts
    return PromptSet(path.name, texts, ids, None)


def _harness_scorer(dataset: Any, builder: Any, workers: int | None) -> PassAtKFn:
    """pass@k of completions: sanitise as the harness does, run the tests in the sandbox, unbiased estimator."""
    from diffucoder.evaluation.harness import EvalSettings, score_samples, summarize
    from diffucoder.evaluation.sanitize import sanitize

    by_id = dataset.by_id()

    def score(task_ids: list[str], completions: list[list[str]], ks: Sequence[int]) -> dict[str, float]:
        import tempfile

        samples = {tid: [sanitize(builder.solution_text(by_id[tid].prompt, c), by_id[tid].entry_point or None)
                         for c in comps] for tid, comps in zip(task_ids, completions)}
        settings = EvalSettings(n_samples=min(len(c) for c in completions), ks=tuple(ks),
                                prompt_style=builder.style, workers=workers)
        with tempfile.TemporaryDirectory(prefix="diffucoder-analyze-") as tmp:
            verdicts = score_samples(dataset, samples, tmp, settings, progress=False)
        scores, _ = summarize(dataset, verdicts, settings)
        out = dict(scores["base"])
        out.update({f"plus_{k}": v for k, v in scores.get("plus", {}).items()})
        return out

    return score
