"""The Dream architecture and its checkpoint folders.

``DreamConfig`` / ``DreamModel`` are what users import; ``diffucoder.model.checkpoint`` holds the folder I/O.
"""

from diffucoder.model.checkpoint import CheckpointError, atomic_directory, read_config
from diffucoder.model.config import ConfigError, DreamConfig
from diffucoder.model.modeling import DreamKVCache, DreamModel, DreamOutput, align_logits

__all__ = ["CheckpointError", "ConfigError", "DreamConfig", "DreamKVCache", "DreamModel", "DreamOutput", "align_logits",
           "atomic_directory", "read_config"]
