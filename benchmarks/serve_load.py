"""Load test of ``diffucoder serve``: throughput and latency at several concurrencies, beside one-by-one decoding.

    .venv/bin/python benchmarks/serve_load.py                         # a random tiny model, CPU (~5 min)
    .venv/bin/python benchmarks/serve_load.py --model runs/sft        # a trained checkpoint
    .venv/bin/python benchmarks/serve_load.py --preset 5m --prompts 16 --out serve_load.json

In one run, on the same fixed prompts (held-out synthetic tasks from :mod:`diffucoder.tasks`, rendered with the
chat template) and the same decoding settings (greedy, entropy order, blocks, threshold, KV cache):

1. **one by one, in process**: ``diffusion_generate`` on each prompt alone (batch 1, one thread), with a
   ``step_callback`` timing the first settled token; run before and after the server levels, to show drift;
2. **the server** (``diffucoder serve --threads 1`` in a subprocess on 127.0.0.1, a free port) at each
   ``--concurrency``: a closed loop of that many client threads, started together, each sending the next prompt
   (a streamed chat completion, the official ``openai`` client) as soon as its previous answer is complete.

Per level: completion tokens/s (all completion tokens over the level's wall time), p50 / p95 request latency,
p50 time to the first streamed text, mean rows per decode call and forward passes per completion token (from
``/metrics``), and how many answers equal the one-by-one answer (greedy: all of them should). "x one-by-one"
divides by the mean of the two in-process runs. The server and the in-process baseline each use one thread; the
client threads mostly wait. Without ``--model`` the model is a random ``--preset`` model with a BPE trained on
the standard library (init std 0.3: logits spread about as a trained model's); it rarely writes an end-of-text,
so it decodes the full ``--max-tokens`` canvas (realistic lengths), nearly one token a step under threshold 0.9
(the worst case for parallel decoding).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Level:
    """One measured level: the in-process baseline or the server at one concurrency."""

    mode: str
    concurrency: int
    requests: int
    completion_tokens: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    first_text: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    batch_rows: float | None = None
    passes_per_token: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds

    def pct(self, values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else \
            (values[0] if values else float("nan"))


def build_random_model(folder: Path, preset: str, vocab: int, init_std: float) -> Path:
    """A randomly initialised ``preset`` model with a ``vocab``-id BPE trained on 100 standard-library files."""
    from diffucoder.data.corpus import read_source, stdlib_files
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tokenizer import train_tokenizer

    tok = train_tokenizer((read_source(f) for f in stdlib_files()[:100]), vocab_size=vocab)
    cfg = DreamConfig.preset(preset, tokenizer=tok, initializer_range=init_std, tie_word_embeddings=False)
    model = DreamModel(cfg, init_weights=False)
    model.init_weights(torch.Generator().manual_seed(0))
    model.save_pretrained(folder, tokenizer=tok)
    return folder


def task_messages(n: int, seed: int) -> list[list[dict[str, str]]]:
    from diffucoder.tasks import dataset

    return [[{"role": "user", "content": row["prompt"]}] for row in dataset("test", n=n, seed=seed)]


def in_process(model_dir: Path, chats: list, s: argparse.Namespace) -> Level:
    """Each prompt decoded alone with the server's settings (greedy, blocks, threshold, cache, cut as it cuts)."""
    from diffucoder.model import DreamModel
    from diffucoder.sampling import completion_ids, diffusion_generate
    from diffucoder.tokenizer import load_tokenizer

    model = DreamModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tok = load_tokenizer(model_dir)
    stops = tok.stop_token_ids()

    def one(messages) -> tuple[str, int, float, float]:
        ids = tok.encode(tok.apply_chat_template(messages))
        t0 = time.perf_counter()
        first = [float("nan")]

        def on_step(state) -> None:
            if first[0] != first[0] and int(state.settled[0]) > 0:
                first[0] = time.perf_counter() - t0

        out = diffusion_generate(model, torch.tensor([ids]), max_new_tokens=s.max_tokens, steps=s.max_tokens,
                                 alg="entropy", temperature=0.0, block_length=s.block_length,
                                 threshold=s.threshold, use_cache=s.use_cache, early_stop=True,
                                 mask_token_id=tok.mask_token_id, vocab_limit=tok.vocab_size,
                                 stop_token_ids=stops, step_callback=on_step)
        cut = completion_ids(out, len(ids), stops)[0][:s.max_tokens]
        return tok.decode(cut), len(cut), time.perf_counter() - t0, first[0]

    one(chats[0])  # warm-up
    t0 = time.perf_counter()
    rows = [one(m) for m in chats]
    seconds = time.perf_counter() - t0
    return Level("one by one, in process", 1, len(rows), sum(r[1] for r in rows), seconds,
                 [r[2] for r in rows], [r[3] for r in rows], [r[0] for r in rows])


class Server:
    """``diffucoder serve`` in a subprocess (``--port 0``); stopped with SIGTERM."""

    def __init__(self, model_dir: Path, s: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "diffucoder.cli.main", "serve", "--model", str(model_dir), "--port", "0",
               "--served-model-name", "bench", "--threads", "1", "--max-batch", str(s.max_batch),
               "--max-queue", "1024", "--log-level", "warning", "--max-tokens", str(s.max_tokens),
               "--block-length", str(s.block_length), "--threshold", str(s.threshold),
               "--use-cache", s.use_cache or "none", "--temperature", "0", "--alg", "entropy"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:  # type: ignore[union-attr]
                self.lines.append(line)
                m = re.search(r"listening on (http://\S+?:\d+)", line)
                if m:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(300) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines))

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) (\S+)$", text, re.M)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def server_level(server: Server, chats: list, concurrency: int, s: argparse.Namespace) -> Level:
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=3600)  # thread-safe

    def one(messages) -> tuple[str, int, float, float]:
        t0 = time.perf_counter()
        first, pieces, tokens = float("nan"), [], 0
        for chunk in client.chat.completions.create(model="bench", messages=messages, max_tokens=s.max_tokens,
                                                    stream=True, stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                if first != first:
                    first = time.perf_counter() - t0
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return "".join(pieces), tokens, time.perf_counter() - t0, first

    one(chats[0])  # warm-up
    before = server.metrics()
    # a closed loop: `concurrency` workers, started together (a barrier, so thread start-up does not spread the
    # first requests), each sending the next unsent prompt as soon as its previous answer is complete
    todo = list(range(len(chats)))
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    rows: list = [None] * len(chats)

    def worker() -> None:
        barrier.wait()
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            rows[i] = one(chats[i])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    after = server.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    tokens = sum(r[1] for r in rows)
    return Level("server", concurrency, len(rows), tokens, seconds, [r[2] for r in rows], [r[3] for r in rows],
                 [r[0] for r in rows],
                 batch_rows=delta("diffucoder_batch_rows_sum") / max(delta("diffucoder_batch_rows_count"), 1),
                 passes_per_token=delta("diffucoder_forward_passes_total") / max(tokens, 1))


def main() -> None:
    from diffucoder.model.config import PRESETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: a random --preset model)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--vocab", type=int, default=4096, help="BPE size of the random model's tokenizer")
    p.add_argument("--init-std", type=float, default=0.3,
                   help="init std of the random model: 0.3 spreads its logits about as a trained model's (std ~2); "
                        "0.02 makes every distribution nearly uniform, with confidences tied within fp32 rounding")
    p.add_argument("--prompts", type=int, default=32, help="held-out synthetic tasks, the same at every level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--use-cache", default="prefix", choices=["none", "prefix", "dual"])
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--out", type=Path, default=None, help="write the levels as JSON here")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if any(c < 1 for c in levels) or args.prompts < 1 or args.max_tokens < 1:
        p.error("--concurrency values, --prompts and --max-tokens must be >= 1")
    if args.model is not None and not (args.model / "config.json").is_file():
        p.error(f"--model {args.model}: no config.json")
    args.use_cache = None if args.use_cache == "none" else args.use_cache
    torch.set_num_threads(1)
    chats = task_messages(args.prompts, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            model_dir = build_random_model(Path(tmp) / f"random-{args.preset}", args.preset, args.vocab,
                                           args.init_std)
            name = f"random {args.preset} (vocab {args.vocab}, init std {args.init_std:g})"
        else:
            model_dir, name = args.model, str(args.model)
        print(f"model: {name}; {args.prompts} prompts, max_tokens {args.max_tokens}, blocks of "
              f"{args.block_length}, threshold {args.threshold}, cache {args.use_cache}, greedy", flush=True)
        results = [in_process(model_dir, chats, args)]
        print(f"  one by one: {results[0].tokens_per_second:.1f} tok/s", flush=True)
        server = Server(model_dir, args)
        try:
            for c in levels:
                results.append(server_level(server, chats, c, args))
                print(f"  server, concurrency {c}: {results[-1].tokens_per_second:.1f} tok/s", flush=True)
        finally:
            server.stop()
        results.append(in_process(model_dir, chats, args))
        results[-1].mode = "one by one, in process (again)"
    base = statistics.mean([results[0].tokens_per_second, results[-1].tokens_per_second])
    reference = results[0].texts
    print()
    print("| mode | concurrency | completion tokens | tokens/s | x one-by-one | p50 latency s | p95 latency s | "
          "p50 first text s | rows per batch | passes per token | equal to one-by-one |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        same = sum(a == b for a, b in zip(r.texts, reference))
        first = [f for f in r.first_text if f == f]
        print(f"| {r.mode} | {r.concurrency} | {r.completion_tokens} | {r.tokens_per_second:.1f} | "
              f"{r.tokens_per_second / base:.2f}x | {r.pct(r.latencies, 50):.2f} | {r.pct(r.latencies, 95):.2f} | "
              f"{r.pct(first, 50) if first else float('nan'):.2f} | "
              f"{'' if r.batch_rows is None else f'{r.batch_rows:.1f}'} | "
              f"{'' if r.passes_per_token is None else f'{r.passes_per_token:.2f}'} | {same}/{r.requests} |")
    top = max((r for r in results if r.mode == "server"), key=lambda r: r.concurrency)
    print(f"\nconcurrency {top.concurrency} / one-by-one tokens/s: {top.tokens_per_second / base:.2f}x")
    if args.out is not None:
        payload = {"model": name, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "model")},
                   "levels": [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in results]}
        tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        tmp_out.replace(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
