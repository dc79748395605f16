"""Coupled-GRPO: diffusion-native reinforcement learning with code-execution rewards.

- :mod:`diffucoder.rl.loss`: group advantages, the clipped GRPO objective with k3 KL, completion masks;
- :mod:`diffucoder.rl.rollout`: prompts, G diffusion decodes per prompt, reward scoring that never crashes;
- :mod:`diffucoder.rl.config`: :class:`GRPOConfig` (TRL names where they overlap), YAML + ``key=value``;
- :mod:`diffucoder.rl.trainer`: :func:`train_grpo` (also ``diffucoder rl CONFIG.yaml``), checkpoints, resume,
  torchrun.

The log-likelihood estimators it uses (coupled, decoupled, full_mask, d1, coupled_normalized) live in
:mod:`diffucoder.diffusion.estimators`.

    from diffucoder.rl import GRPOConfig, train_grpo
    result = train_grpo(GRPOConfig.from_yaml("configs/rl_synthetic_cpu.yaml"))
"""

from diffucoder.rl.config import GRPOConfig, RLConfigError, parse_overrides
from diffucoder.rl.loss import GRPOLossOutput, completion_mask_from_ids, group_advantages, grpo_loss
from diffucoder.rl.trainer import GRPOResult, GRPOTrainer, train_grpo

__all__ = ["GRPOConfig", "GRPOLossOutput", "GRPOResult", "GRPOTrainer", "RLConfigError", "completion_mask_from_ids",
           "group_advantages", "grpo_loss", "parse_overrides", "train_grpo"]
