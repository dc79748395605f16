"""Decoding-order analysis (DiffuCoder paper, section 4): AR-ness, the entropy sink, reveal heatmaps, plots.

    from diffucoder.analysis import local_ar_ness, global_ar_ness, ar_ness_curves
    out = model.diffusion_generate(ids, max_new_tokens=64, steps=64, alg="entropy", return_dict_in_generate=True)
    local_ar_ness(out.trace.order(0), k=1)

:func:`diffucoder.analysis.experiment.analyze_decoding_order` runs the whole study (``diffucoder analyze``).
"""

from diffucoder.analysis.ar_ness import ArNessCurves, ar_ness_curves, global_ar_ness, local_ar_ness
from diffucoder.analysis.profiles import first_step_profile, reveal_heatmap

__all__ = ["ArNessCurves", "ar_ness_curves", "first_step_profile", "global_ar_ness", "local_ar_ness",
           "reveal_heatmap"]
