"""Masked-diffusion training: pretraining, AR adaptation and SFT (see ``loop.py``).

    from diffucoder.training import load_config, train
    result = train(load_config("configs/pretrain_tiny_cpu.yaml", ["optim.steps=100"]))
    result.final_path   # RUN/final, an HF-layout model folder with its tokenizer
"""

from diffucoder.training.config import ConfigError, TrainConfig, dump_config, load_config
from diffucoder.training.loop import TrainResult, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "dump_config", "load_config", "train"]
