"""diffucoder: masked diffusion language models for code.

Implements the DiffuCoder system (arXiv 2506.20639): the Dream architecture with Hugging Face checkpoint I/O,
masked-diffusion training, Dream-compatible diffusion decoding, decoding-order analysis, coupled-GRPO and a
sandboxed code-execution / evaluation harness. Heavy sub-modules are imported lazily, so ``import diffucoder``
stays fast.
"""

__version__ = "0.1.0"
