"""An OpenAI-compatible server for full-attention diffusion coders (Dream / DiffuCoder): ``diffucoder serve``.

    diffucoder serve --model runs/sft --port 8000

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Write add(a, b)."}],
                                   max_tokens=64, extra_body={"block_length": 32, "threshold": 0.9})

Modules: :mod:`~diffucoder.serving.engine` (queue, dynamic batching, per-step streaming of the settled text),
:mod:`~diffucoder.serving.text` (end-of-text, ``max_tokens`` and stop sequences on the settled prefix),
:mod:`~diffucoder.serving.protocol` (request schemas, response shapes, OpenAI-style errors),
:mod:`~diffucoder.serving.settings` (server defaults merged with a request's fields),
:mod:`~diffucoder.serving.app` (the FastAPI app), :mod:`~diffucoder.serving.metrics` (Prometheus),
:mod:`~diffucoder.serving.live_view` (the page at ``/``). Needs the ``serve`` extra (fastapi, uvicorn,
prometheus-client); nothing here is imported by ``import diffucoder``.
"""
