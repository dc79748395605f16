"""Diffusion decoding with Dream's semantics, and its decode trace.

    from diffucoder.sampling import diffusion_generate
    out = diffusion_generate(model, prompt_ids, max_new_tokens=256, steps=256, alg="entropy", temperature=0.2,
                             top_p=0.95, return_dict_in_generate=True, generator=torch.Generator().manual_seed(0))
    out.sequences, out.trace.order(0)

``model.diffusion_generate(...)`` calls the same function. See :mod:`diffucoder.sampling.generate`.
"""

from diffucoder.sampling.generate import (CACHE_MODES, DecodeStep, DiffusionLM, GenerationError, diffusion_generate,
                                         inherited_sampling_defaults, reveal_counts)
from diffucoder.sampling.policies import ALGORITHMS, StepChoice, sample_tokens
from diffucoder.sampling.text import completion_ids, cut_at_stop, decode_completions, render_canvas
from diffucoder.sampling.trace import DecodeTrace, GenerationOutput, PositionReveal

__all__ = ["ALGORITHMS", "CACHE_MODES", "DecodeStep", "DecodeTrace", "DiffusionLM", "GenerationError", "GenerationOutput", "PositionReveal", "StepChoice",
           "completion_ids", "cut_at_stop", "decode_completions", "diffusion_generate", "render_canvas",
           "inherited_sampling_defaults", "reveal_counts", "sample_tokens"]
