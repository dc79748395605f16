"""``diffucoder serve``: an OpenAI-compatible HTTP server for a diffusion coder, with a live view at ``/``.

    diffucoder serve --model runs/sft --port 8000 --max-batch 32

Requests that arrive together share one canvas batch; decoding defaults (``--block-length``, ``--threshold``,
``--alg`` ...) apply to every request that does not set them itself (as extra body fields). ``--port 0`` picks
a free port; the line ``listening on http://HOST:PORT`` on stderr says which, once the server is ready.
SIGINT / SIGTERM shut down gracefully: running requests get up to ``--shutdown-timeout`` seconds to finish,
then ``stopped serving NAME`` is printed and the process ends by that signal (uvicorn re-raises it, so the exit
status is the signal's, as a supervisor expects).
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.serving.settings import ServerDefaults


INHERIT = "inherit"


def _opt_int(v: str) -> int | str | None:
    if v.lower() == INHERIT:
        return INHERIT
    return None if v.lower() in ("none", "off") else int(v)


def _opt_float(v: str) -> float | str | None:
    if v.lower() == INHERIT:
        return INHERIT
    return None if v.lower() in ("none", "off") else float(v)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="checkpoint folder (config, weights, tokenizer)")
    p.add_argument("--served-model-name", default=None, help="model id clients use (default: the folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: pick a free one)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                   help="weights dtype (auto: as stored); on CPUs without AMX float32 is the fast one")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch", type=int, default=32, help="most canvas rows decoded together")
    g.add_argument("--max-queue", type=int, default=256, help="most requests waiting; more are answered 429")
    g.add_argument("--batch-wait-ms", type=float, default=20.0,
                   help="a free engine gathers requests until none has arrived for this long ...")
    g.add_argument("--max-batch-wait-ms", type=float, default=200.0,
                   help="... but at most this long after the oldest waiting request arrived")
    g.add_argument("--request-timeout", type=_opt_float, default=600.0,
                   help="seconds from arrival to the last token before a request is cancelled with 504 "
                        "('none': no limit)")
    g.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds running requests get to finish on SIGINT / SIGTERM")
    d = p.add_argument_group("decoding defaults (a request's own fields override them; 'none' turns one off)")
    d.add_argument("--max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    d.add_argument("--temperature", type=float, default=0.0, help="temperature when a request gives none (0: greedy)")
    d.add_argument("--top-p", type=_opt_float, default=INHERIT,
                   help="default 'inherit': the checkpoint's value as the reference resolves it (1.0 when unset)")
    d.add_argument("--top-k", type=_opt_int, default=INHERIT,
                   help="default 'inherit': the checkpoint's value as the reference resolves it (50 when unset); "
                        "'none' switches top-k off")
    d.add_argument("--steps", type=_opt_int, default=None, help="decoding steps (default: one per canvas token)")
    d.add_argument("--alg", default="entropy", choices=["origin", "maskgit_plus", "topk_margin", "entropy"],
                   help="unmasking order (DiffuCoder: entropy)")
    d.add_argument("--alg-temp", type=_opt_float, default=None, help="sample positions from softmax(conf/alg_temp)")
    d.add_argument("--block-length", type=_opt_int, default=32, help="semi-autoregressive block length")
    d.add_argument("--threshold", type=_opt_float, default=0.9,
                   help="parallel decoding: reveal every position whose token probability exceeds this")
    d.add_argument("--use-cache", default="prefix", choices=["none", "prefix", "dual"],
                   help="Fast-dLLM block-wise KV cache (prefix: prompt and finished blocks; dual: also the suffix)")
    p.add_argument("--seed", type=int, default=None, help="seed of the server's RNG for unseeded sampling")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log detail (debug also logs every request and batch)")


def _defaults(args: argparse.Namespace, inherited: dict | None = None) -> "ServerDefaults":
    """The server's decoding defaults; ``inherit`` resolved from ``inherited`` (None before the model is loaded)."""
    from diffucoder.serving.settings import ServerDefaults

    inherited = inherited or {"top_p": None, "top_k": None}
    return ServerDefaults(
        max_tokens=args.max_tokens, temperature=args.temperature,
        top_p=inherited["top_p"] if args.top_p == INHERIT else args.top_p,
        top_k=inherited["top_k"] if args.top_k == INHERIT else args.top_k,
        steps=args.steps, alg=args.alg, alg_temp=args.alg_temp, block_length=args.block_length,
        threshold=args.threshold, use_cache=None if args.use_cache == "none" else args.use_cache)


def _check(args: argparse.Namespace) -> str | None:
    if not args.model.is_dir():
        return f"--model {args.model}: no such folder"
    if not (args.model / "config.json").is_file():
        return f"--model {args.model}: no config.json (not a checkpoint folder)"
    if not 0 <= args.port <= 65535:
        return f"--port must be in 0..65535, got {args.port}"
    for name in ("max_batch", "max_queue"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
    if not 0 <= args.batch_wait_ms <= args.max_batch_wait_ms:
        return (f"need 0 <= --batch-wait-ms <= --max-batch-wait-ms, got {args.batch_wait_ms:g} and "
                f"{args.max_batch_wait_ms:g}")
    if args.request_timeout is not None and args.request_timeout <= 0:
        return f"--request-timeout must be > 0 (or 'none'), got {args.request_timeout}"
    for name in ("steps", "alg_temp", "block_length", "threshold", "request_timeout"):
        if getattr(args, name) == INHERIT:
            return f"--{name.replace('_', '-')}: 'inherit' is only for --top-p and --top-k"
    if args.threads is not None and args.threads < 1:
        return f"--threads must be >= 1, got {args.threads}"
    try:
        _defaults(args).validate()
    except ValueError as e:
        return str(e)
    return None


def run(args: argparse.Namespace) -> int:
    err = _check(args)
    if err is not None:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        print(f"error: diffucoder serve needs the 'serve' extra (pip install 'diffucoder[serve]'): {e}",
              file=sys.stderr)
        return 1
    import torch

    from diffucoder.model import DreamModel
    from diffucoder.serving.app import create_app
    from diffucoder.serving.engine import Engine
    from diffucoder.tokenizer import load_tokenizer

    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("diffucoder.serve")
    logger.addHandler(handler)
    logger.setLevel(args.log_level.upper())
    logger.propagate = False
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available", file=sys.stderr)
        return 2
    # bind first: a busy port is an error before seconds of model loading
    try:
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    try:
        tok = load_tokenizer(args.model)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[args.dtype]
        model = DreamModel.from_pretrained(args.model, torch_dtype=dtype, device=args.device).eval()
    except (FileNotFoundError, ValueError) as e:
        sock.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    from diffucoder.sampling import inherited_sampling_defaults

    defaults = _defaults(args, inherited_sampling_defaults(model.config))
    try:
        defaults.validate()
    except ValueError as e:
        sock.close()
        print(f"error: {args.model}/config.json's sampling defaults: {e}", file=sys.stderr)
        return 2
    name = args.served_model_name or args.model.resolve().name
    engine = Engine(model, tok, max_batch=args.max_batch, max_queue=args.max_queue,
                    batch_wait=args.batch_wait_ms / 1000, max_batch_wait=args.max_batch_wait_ms / 1000,
                    seed=args.seed)
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:
        d = defaults
        print(f"serving {name} ({model.num_parameters() / 1e6:.1f}M parameters, {args.device}; defaults: "
              f"max_tokens {d.max_tokens}, temperature {d.temperature:g}, top_p {d.top_p}, top_k {d.top_k}, "
              f"alg {d.alg}, block_length {d.block_length}, threshold {d.threshold}, use_cache {d.use_cache})",
              file=sys.stderr)
        print(f"listening on http://{shown}:{port} (live view: http://{shown}:{port}/)", file=sys.stderr,
              flush=True)

    def stopped() -> None:
        print(f"stopped serving {name}", file=sys.stderr, flush=True)

    app = create_app(engine, model_name=name, defaults=defaults, request_timeout=args.request_timeout,
                     on_ready=ready, on_stopped=stopped, shutdown_timeout=args.shutdown_timeout)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=args.shutdown_timeout,
                            access_log=args.log_level == "debug")
    uvicorn.Server(config).run(sockets=[sock])
    return 0
