"""Masked diffusion: the forward (noising) process and the ELBO loss, shared by training and RL.

``noise``: ``sample_t``, ``maskable_positions``, ``mask_tokens`` / ``mask_with_uniforms``, the AR-adaptation
attention mask. ``losses``: ELBO-weighted masked cross-entropy with either normalisation. ``estimators``: the
per-token log-likelihood estimators of coupled-GRPO and its baselines (coupled, decoupled, full_mask, d1,
coupled_normalized).
"""

from diffucoder.diffusion.estimators import EstimatorConfig, MaskPlan, draw_mask_plan, estimate_logp
from diffucoder.diffusion.losses import (LossSums, elbo_weights, masked_diffusion_loss,
                                         masked_diffusion_loss_sums, masked_positions_logits, model_loss_sums,
                                         normalize)
from diffucoder.diffusion.noise import (NoisedBatch, annealed_attention_mask, mask_tokens, mask_with_uniforms,
                                        maskable_positions, noise_batch, sample_t)

__all__ = ["EstimatorConfig", "LossSums", "MaskPlan", "NoisedBatch", "annealed_attention_mask", "draw_mask_plan",
           "elbo_weights", "estimate_logp", "mask_tokens",
           "mask_with_uniforms", "maskable_positions", "masked_diffusion_loss", "masked_diffusion_loss_sums",
           "masked_positions_logits", "model_loss_sums", "noise_batch", "normalize", "sample_t"]
