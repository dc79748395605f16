"""Variance and bias of the per-token log-likelihood estimators at equal forward-pass budgets.

    .venv/bin/python benchmarks/estimator_variance.py [--model runs/.../final] [--draws 200] [--seqs 8]

Fixed model, fixed prompts and completions (synthetic tasks: the chat-formatted question and its canonical
fenced answer ending with ``<|im_end|>``, padded to a fixed canvas: the layout SFT trains and GRPO scores).
For every estimator and budget (forward passes per sequence) we draw ``--draws`` independent mask plans and
report, over those draws:

- ``tok_sd``: the per-token standard deviation (root of the mean over completion tokens of the variance);
- ``seq_sd``: the standard deviation of the per-sequence estimate (sum over the answer's tokens), averaged
  over sequences (root of the mean variance);
- ``tok_mean``: the mean estimate per answer token (its scale: coupled / decoupled sit near twice the others);
- ``tok_bias`` / ``seq_bias``: mean estimate minus the reference below, per token and per sequence;
- ``own_bias``: mean estimate minus the estimator's *own* expectation as derived in
  ``diffucoder.diffusion.estimators.draw_mask_plan`` (computed from the reference's conditional means; about 0
  up to Monte-Carlo and quadrature error when the derivation holds; n/a for d1, which masks the prompt);
- ``seq_cv``: ``seq_sd`` divided by the mean |per-sequence estimate| (compares estimators of different scale);
- ``tok_rmse``: sqrt(bias^2 + variance) per token, the error a single estimate makes on average.

The reference ("bias" target): the per-token diffusion ELBO term
``l_j = int_0^1 c_j(t) dt`` with ``c_j(t) = E[log p(x_j | x_t) | j masked]`` (prompt clean, each completion token
masked with probability t). Summed over the answer it is the model's ELBO of the completion given the prompt, a
lower bound on ``log p_theta(completion | prompt)`` and, for absorbing-state diffusion, the expected
log-likelihood of the completion under a uniformly random decoding order: the closest thing a masked diffusion LM
has to an exact sequence log-likelihood. No estimator here is unbiased for it (DiffuCoder's restricts t to
[0.2, 0.8]; see the docstring named above for what each one does target). ``c_j`` is computed on a stratified
t grid (cells aligned with ``t_min`` / ``t_max``) with several masks per grid point, conditioning on each token
being masked (no 1/t weights, so no blow-up), midpoint rule; ``c_j(1)`` is the exact full-mask pass. Its own
Monte-Carlo error is reported. Coupled vs decoupled (same expectation) is the clean variance comparison;
coupled_normalized vs coupled is the same masks with weights that keep one log-probability per token. 95%
confidence intervals come from a bootstrap over draws (``--boot`` resamples).

With no ``--model`` the newest checkpoint folder under ``runs/`` holding a tokenizer is used, else a tiny
random model (said in the output); results go to stdout and, with ``--json``, to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffucoder.diffusion.estimators import EstimatorConfig, MaskPlan, draw_mask_plan, estimate_logp  # noqa: E402


@dataclass
class Setup:
    model: torch.nn.Module
    tok: object
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    prompt_mask: torch.Tensor  # (B, Lp)
    completion_mask: torch.Tensor  # (B, Lc) answer + EOS
    description: str


def find_model(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    runs = ROOT / "runs"
    if not runs.is_dir():
        return None
    cands = [p.parent for p in runs.rglob("config.json") if (p.parent / "tokenizer.json").is_file()
             and any(p.parent.glob("*.safetensors"))]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def build_setup(args: argparse.Namespace) -> Setup:
    from diffucoder.data.sft import encode_answer
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.rl.loss import completion_mask_from_ids
    from diffucoder.rl.rollout import left_pad, render_prompt
    from diffucoder.tasks import format_answer, generate_tasks, to_rl_record
    from diffucoder.tokenizer import load_tokenizer, train_tokenizer

    tasks = generate_tasks(args.seqs, "test", seed=args.seed)
    path = None if args.random else find_model(args.model)
    if path is not None:
        model = DreamModel.from_pretrained(path, torch_dtype=torch.float32)
        tok = load_tokenizer(args.tokenizer or path)
        desc = f"trained checkpoint {path} ({model.num_parameters() / 1e6:.2f}M parameters)"
    else:
        tok = train_tokenizer([format_answer(t) + t.question for t in generate_tasks(200, "train", seed=0)],
                              vocab_size=512)
        cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id)
        model = DreamModel(cfg, init_weights=False)
        model.init_weights(generator=torch.Generator().manual_seed(args.seed))
        desc = f"tiny RANDOM model ({model.num_parameters() / 1e6:.2f}M parameters; no trained checkpoint under runs/)"
    model.eval()
    prompts = [tok.encode(render_prompt(to_rl_record(t), tok)) for t in tasks]
    pb = left_pad(prompts, tok.pad_token_id)
    Lc = args.canvas
    comp = torch.full((len(tasks), Lc), tok.pad_token_id, dtype=torch.long)
    for i, t in enumerate(tasks):
        ids = encode_answer(tok, format_answer(t))
        ids = ids[: Lc - 1] + ids[-1:]  # a too-long answer is cut, keeping its end token
        comp[i, : len(ids)] = torch.tensor(ids)
    cmask, _ = completion_mask_from_ids(comp, tok.stop_token_ids())
    ids = torch.cat([pb.input_ids, comp], 1)
    attn = torch.cat([pb.attention_mask, torch.ones_like(comp)], 1)
    return Setup(model, tok, ids, attn, pb.attention_mask, cmask, desc)


def draws_for(s: Setup, cfg: EstimatorConfig, R: int, gen: torch.Generator, rows_per_forward: int) -> torch.Tensor:
    """(R, B, Lc) estimates from R independent plans (batched as one big plan)."""
    B = s.input_ids.shape[0]
    Lc = s.completion_mask.shape[1]
    out = []
    chunk = max(1, rows_per_forward // (B * cfg.passes))  # draws per forward batch
    with torch.no_grad():
        for r0 in range(0, R, chunk):
            n = min(chunk, R - r0)
            plans = [draw_mask_plan(cfg, s.prompt_mask, Lc, generator=gen) for _ in range(n)]
            big = MaskPlan(torch.cat([p.is_masked for p in plans], 1), torch.cat([p.weights for p in plans], 1),
                           torch.cat([p.t for p in plans], 1), plans[0].prompt_len, cfg.name)
            est = estimate_logp(s.model, s.input_ids.repeat(n, 1), s.attention_mask.repeat(n, 1), big,
                                s.tok.mask_token_id, micro_batch_size=rows_per_forward)
            out.append(est.logp.view(n, B, Lc))
    return torch.cat(out, 0)


@dataclass
class Reference:
    """Conditional means of the answer tokens' log-probs, (B, Lc) each, from :func:`conditional_means`."""

    elbo: torch.Tensor
    """l_j = int_0^1 c_j(t) dt (midpoint rule over the whole grid)."""
    elbo_se: torch.Tensor
    """Monte-Carlo standard error of ``elbo``."""
    full: torch.Tensor
    """c_j(1): the full-mask log-prob (exact)."""
    uniform: torch.Tensor
    """m_j = E_{t ~ U(t_min, t_max)} c_j(t)."""
    size_biased: torch.Tensor
    """Q_j = E_{tau ~ q} c_j(tau), q(tau) = 2 tau / (t_max - t_min) on [t_min, t_max] (t_min + t_max = 1)."""

    def expected(self, cfg: EstimatorConfig) -> torch.Tensor | None:
        """The estimator's expectation per token (draw_mask_plan's derivation); None when not derivable here."""
        lam, full = cfg.num_pairs, int(cfg.full_mask_pass)
        if cfg.name == "full_mask":
            return self.full
        if cfg.name in ("coupled", "decoupled"):
            return (full * self.full + lam * 2 * self.uniform) / (lam + full)
        if cfg.name == "coupled_normalized":
            return (full * self.full + lam * self.size_biased) / (lam + full)
        return None


def t_grid(grid: int, t_min: float, t_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell midpoints and widths over [0, 1] with cell edges at t_min and t_max, and which cells lie inside.

    ``round(grid * t_min)`` cells below t_min (at least 1), as many above t_max by its share, the rest between.
    """
    lo = max(1, round(grid * t_min))
    hi = max(1, round(grid * (1 - t_max)))
    mid = max(1, grid - lo - hi)
    edges = torch.cat([torch.linspace(0, t_min, lo + 1)[:-1], torch.linspace(t_min, t_max, mid + 1)[:-1],
                       torch.linspace(t_max, 1, hi + 1)]).double()  # (K + 1,)
    centres = (edges[1:] + edges[:-1]) / 2  # (K,)
    widths = edges[1:] - edges[:-1]  # (K,)
    inside = torch.zeros(len(centres), dtype=torch.bool)
    inside[lo:lo + mid] = True
    return centres, widths, inside


def conditional_means(s: Setup, grid: int, per_t: int, gen: torch.Generator, rows_per_forward: int,
                      t_min: float = 0.2, t_max: float = 0.8) -> Reference:
    """c_j(t) on the grid of :func:`t_grid` (B, Lc) per point, by conditioning on j being masked."""
    from diffucoder.diffusion.estimators import completion_token_logp

    if abs(t_min + t_max - 1.0) > 1e-9:
        raise ValueError("the size-biased target below assumes t_min + t_max = 1 (the estimators' default range)")
    B, L = s.input_ids.shape
    Lc = s.completion_mask.shape[1]
    Lp = L - Lc
    mask_id = s.tok.mask_token_id
    targets = s.input_ids[:, Lp:]

    def logp_of(xt: torch.Tensor, reps: int) -> torch.Tensor:  # xt (reps * B, L) -> (reps, B, Lc)
        attn = s.attention_mask.repeat(reps, 1)
        tgt = targets.repeat(reps, 1)
        out = [completion_token_logp(s.model, xt[a:a + rows_per_forward], tgt[a:a + rows_per_forward], Lp,
                                     attn[a:a + rows_per_forward]) for a in range(0, reps * B, rows_per_forward)]
        return torch.cat(out).view(reps, B, Lc).double()

    centres, widths, inside = t_grid(grid, t_min, t_max)
    means, sems = [], []
    with torch.no_grad():
        full_x = s.input_ids.clone()
        full_x[:, Lp:] = mask_id
        full = logp_of(full_x, 1)[0]  # (B, Lc) c_j(1)
        from tqdm.auto import tqdm

        for t in tqdm(centres.tolist(), desc="reference t grid", file=sys.stderr):
            acc = torch.zeros(B, Lc, dtype=torch.float64)
            acc2 = torch.zeros(B, Lc, dtype=torch.float64)
            cnt = torch.zeros(B, Lc, dtype=torch.float64)
            # each draw: a Bernoulli(t) mask; masked tokens give samples of E[logp_j | t, j masked]; top up
            # until every token has been masked at least twice at this t
            while True:
                m = torch.rand(per_t, B, Lc, generator=gen) < t  # (R, B, Lc)
                xt = s.input_ids.repeat(per_t, 1).view(per_t, B, L).clone()
                xt[:, :, Lp:] = torch.where(m, torch.full_like(xt[:, :, Lp:], mask_id), xt[:, :, Lp:])
                lp = logp_of(xt.view(per_t * B, L), per_t)  # (R, B, Lc)
                md = m.double()
                acc += (lp * md).sum(0)
                acc2 += (lp ** 2 * md).sum(0)
                cnt += md.sum(0)
                if bool((cnt >= 2).all()):
                    break
            mean = acc / cnt
            var = (acc2 / cnt - mean ** 2).clamp_min(0) * cnt / (cnt - 1)
            means.append(mean)
            sems.append(var / cnt)
    c = torch.stack(means)  # (K, B, Lc)
    w = widths[:, None, None]
    elbo = (c * w).sum(0)
    elbo_se = (torch.stack(sems) * w ** 2).sum(0).sqrt()
    wi = w[inside]
    uniform = (c[inside] * wi).sum(0) / wi.sum()
    q = 2 * centres[inside][:, None, None] * wi / (t_max - t_min)  # q(tau) d tau per cell
    size_biased = (c[inside] * q).sum(0) / q.sum()
    return Reference(elbo.float(), elbo_se.float(), full.float(), uniform.float(), size_biased.float())


def summarise(draws: torch.Tensor, ref: torch.Tensor, cmask: torch.Tensor, boot: int, gen: torch.Generator,
              own: torch.Tensor | None = None) -> dict[str, float]:
    """Statistics over draws (R, B, Lc), with bootstrap 95% CIs over draws; ``own``: the derived expectation."""
    m = cmask.bool()
    ntok = float(m.sum())

    def stats(d: torch.Tensor) -> dict[str, float]:
        var_tok = d.var(0, unbiased=True)  # (B, Lc)
        seq = (d * m).sum(-1)  # (R, B)
        mean_tok = d.mean(0)
        bias_tok = mean_tok - ref
        tok_var = float((var_tok * m).sum() / ntok)
        tok_bias = float((bias_tok * m).sum() / ntok)
        seq_mean = float(seq.mean(0).abs().mean())
        return {
            "tok_mean": float((mean_tok * m).sum() / ntok),
            "own_bias": float(((mean_tok - own) * m).sum() / ntok) if own is not None else math.nan,
            "tok_sd": math.sqrt(tok_var),
            "seq_cv": math.sqrt(float(seq.var(0, unbiased=True).mean())) / max(seq_mean, 1e-12),
            "seq_sd": math.sqrt(float(seq.var(0, unbiased=True).mean())),
            "tok_bias": tok_bias,
            "seq_bias": float(((mean_tok - ref) * m).sum(-1).mean()),
            "tok_rmse": math.sqrt(float((((bias_tok ** 2) + var_tok) * m).sum() / ntok)),
        }

    point = stats(draws)
    R = draws.shape[0]
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(boot):
        idx = torch.randint(0, R, (R,), generator=gen)
        for k, v in stats(draws[idx]).items():
            samples[k].append(v)
    out = dict(point)
    for k, vs in samples.items():
        vs = sorted(vs)
        out[k + "_lo"] = vs[int(0.025 * (len(vs) - 1))]
        out[k + "_hi"] = vs[int(0.975 * (len(vs) - 1))]
    return out


def configurations(budgets: list[int]) -> list[tuple[int, str, EstimatorConfig]]:
    """(budget, label, config) at equal forward passes per sequence."""
    out = []
    for b in budgets:
        if b % 2 == 0:
            lam = b // 2
            out.append((b, f"coupled(l={lam})", EstimatorConfig("coupled", num_pairs=lam, full_mask_pass=False)))
            out.append((b, f"decoupled(l={lam})", EstimatorConfig("decoupled", num_pairs=lam, full_mask_pass=False)))
            out.append((b, f"coupled_normalized(l={lam})",
                        EstimatorConfig("coupled_normalized", num_pairs=lam, full_mask_pass=False)))
        else:
            lam = (b - 1) // 2
            if lam >= 1:
                out.append((b, f"coupled+full(l={lam})", EstimatorConfig("coupled", num_pairs=lam)))
                out.append((b, f"decoupled+full(l={lam})", EstimatorConfig("decoupled", num_pairs=lam)))
                out.append((b, f"coupled_normalized+full(l={lam})",
                            EstimatorConfig("coupled_normalized", num_pairs=lam)))
        out.append((b, f"d1(p=0.15,x{b})", EstimatorConfig("d1", num_passes=b)))
    out.append((1, "full_mask", EstimatorConfig("full_mask")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: newest under runs/, else tiny random)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json or its folder (default: the model folder's)")
    ap.add_argument("--random", action="store_true", help="use the tiny random model even if a checkpoint exists")
    ap.add_argument("--seqs", type=int, default=8, help="prompt/completion pairs")
    ap.add_argument("--canvas", type=int, default=48, help="completion canvas length")
    ap.add_argument("--draws", type=int, default=200, help="independent estimates per estimator")
    ap.add_argument("--budgets", default="2,3,4,5", help="forward passes per sequence to compare at")
    ap.add_argument("--ref-grid", type=int, default=32, help="t grid points of the ELBO reference")
    ap.add_argument("--ref-per-t", type=int, default=16, help="masks per grid point of the reference")
    ap.add_argument("--boot", type=int, default=300, help="bootstrap resamples for the 95%% CIs")
    ap.add_argument("--rows", type=int, default=256, help="sequences per forward call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    t0 = time.time()
    s = build_setup(args)
    print(f"model: {s.description}")
    print(f"data: {args.seqs} synthetic test-split tasks (seed {args.seed}), canvas {args.canvas}, "
          f"{int(s.completion_mask.sum())} answer tokens; {args.draws} draws per estimator; seed {args.seed}")
    from tqdm.auto import tqdm

    R = conditional_means(s, args.ref_grid, args.ref_per_t, torch.Generator().manual_seed(args.seed + 1), args.rows)
    ref = R.elbo
    m = s.completion_mask.bool()

    def tok_mean(x: torch.Tensor) -> float:
        return float((x * m).sum() / m.sum())

    ref_tok = tok_mean(ref)
    ref_seq = float((ref * m).sum(-1).mean())
    ref_se_tok = float(((R.elbo_se ** 2) * m).sum().sqrt() / m.sum())
    print(f"reference ELBO: {ref_tok:.4f} nats/token (MC s.e. of the token mean {ref_se_tok:.4f}), "
          f"{ref_seq:.2f} nats/sequence (grid {args.ref_grid} x {args.ref_per_t} masks)")
    print(f"conditional means per token: c(1) (full mask) {tok_mean(R.full):.4f}, m = E_U(0.2,0.8) c(t) "
          f"{tok_mean(R.uniform):.4f}, Q = E_q c(tau) (size-biased) {tok_mean(R.size_biased):.4f}")
    budgets = [int(x) for x in args.budgets.split(",") if x.strip()]
    rows = []
    confs = configurations(budgets)
    for k, (b, label, cfg) in enumerate(tqdm(confs, desc="estimators", file=sys.stderr)):
        gen = torch.Generator().manual_seed(args.seed * 1000 + 17 + k)
        d = draws_for(s, cfg, args.draws, gen, args.rows)
        own = R.expected(cfg)
        st = summarise(d, ref, s.completion_mask, args.boot, torch.Generator().manual_seed(args.seed + 99 + k), own)
        rows.append({"budget": b, "estimator": label, **st})
    hdr = (f"{'passes':>6} {'estimator':<30} {'tok_mean':>9} {'tok_sd [95% CI]':>24} {'seq_sd [95% CI]':>26} "
           f"{'seq_cv':>7} {'tok_bias':>9} {'own_bias':>9} {'seq_bias':>9} {'tok_rmse':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        own_b = "n/a" if math.isnan(r["own_bias"]) else f"{r['own_bias']:.4f}"
        print(f"{r['budget']:>6} {r['estimator']:<30} {r['tok_mean']:>9.4f} "
              f"{r['tok_sd']:>7.4f} [{r['tok_sd_lo']:.4f},{r['tok_sd_hi']:.4f}] "
              f"{r['seq_sd']:>8.3f} [{r['seq_sd_lo']:.3f},{r['seq_sd_hi']:.3f}] "
              f"{r['seq_cv']:>7.4f} {r['tok_bias']:>9.4f} {own_b:>9} {r['seq_bias']:>9.3f} {r['tok_rmse']:>9.4f}")
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": s.description, "args": vars(args), "reference": {
            "tok": ref_tok, "seq": ref_seq, "tok_se": ref_se_tok, "full_mask_tok": tok_mean(R.full),
            "uniform_t_tok": tok_mean(R.uniform), "size_biased_tok": tok_mean(R.size_biased)},
            "rows": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                     for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
