"""``diffucoder serve`` end to end: a real server process on 127.0.0.1 (a free port), the official ``openai``
client, a tiny random checkpoint. Answers are checked against ``diffusion_generate`` called directly, streams
against non-streamed answers, batched answers against solo ones; bad inputs get OpenAI-style errors and the
server keeps serving; SIGTERM leaves no process behind (the fixture's teardown)."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_util import ServerProcess, build_checkpoint, http, metric  # noqa: E402

MODEL = "tiny"
CHAT = [{"role": "user", "content": "Write add(a, b)."}]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("serve") / MODEL)


@pytest.fixture(scope="module")
def server(ckpt):
    s = ServerProcess(ckpt, "--max-batch", "32", "--batch-wait-ms", "50")
    yield s
    children = s.children()
    rc = s.stop()
    assert rc in (0, -signal.SIGTERM), s.log  # uvicorn re-raises the signal after its graceful shutdown
    assert "stopped serving" in s.log, s.log
    assert children == []
    assert "Traceback" not in s.log, s.log


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def library(ckpt):
    """``answer(prompt_ids, max_tokens, block_length, threshold, steps)``: the greedy text and token count that
    ``diffusion_generate`` gives alone, cut as the server cuts (end-of-text / pad / <|im_end|>, max_tokens)."""
    from diffucoder.model import DreamModel
    from diffucoder.sampling import completion_ids, diffusion_generate
    from diffucoder.tokenizer import load_tokenizer

    model = DreamModel.from_pretrained(ckpt).eval()
    tok = load_tokenizer(ckpt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model decodes fastest on one thread (and the server has the other core)

    from diffucoder.sampling import inherited_sampling_defaults
    from diffucoder.serving.settings import ServerDefaults

    d = ServerDefaults()
    inherited = inherited_sampling_defaults(model.config)  # the server's default top-p / top-k

    def answer(ids, max_tokens, block_length=d.block_length, threshold=d.threshold, steps=None):
        n_blocks = 1 if block_length is None else -(-max_tokens // min(block_length, max_tokens))
        steps = steps or -(-max_tokens // n_blocks) * n_blocks
        out = diffusion_generate(model, torch.tensor([ids]), max_new_tokens=max_tokens, steps=steps, alg=d.alg,
                                 temperature=0.0, top_p=inherited["top_p"], top_k=inherited["top_k"],
                                 block_length=block_length, threshold=threshold, use_cache=d.use_cache,
                                 mask_token_id=tok.mask_token_id, vocab_limit=tok.vocab_size)
        cut = completion_ids(out, len(ids), tok.stop_token_ids())[0][:max_tokens]
        return tok.decode(cut), len(cut)

    answer.tok = tok
    yield answer
    torch.set_num_threads(threads)


def test_models_health_and_metrics(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    status, body = http(server.url + "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == MODEL
    status, text = http(server.url + "/metrics")
    assert status == 200
    for name in ("diffucoder_requests_total", "diffucoder_queue_depth", "diffucoder_batch_rows_bucket",
                 "diffucoder_completion_tokens_per_second_recent", "diffucoder_forward_passes_per_token_recent"):
        assert name in text


def test_completion_equals_library_decode(client, library):
    tok = library.tok
    prompt = "def add(a, b):"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40)  # server defaults: blocks, threshold
    text, n = library(tok.encode(prompt), 40)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].text == text
    assert r.usage.prompt_tokens == len(tok.encode(prompt))
    assert r.usage.completion_tokens == n
    assert r.usage.total_tokens == r.usage.prompt_tokens + n
    assert r.choices[0].finish_reason == ("length" if n == 40 else "stop")
    # one token a step, no blocks: the reference schedule, through extra_body
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12,
                                  extra_body={"block_length": None, "threshold": None, "steps": 12})
    assert r.choices[0].text == library(tok.encode(prompt), 12, block_length=None, threshold=None, steps=12)[0]


def test_chat_completion_uses_the_chat_template(client, library):
    tok = library.tok
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=20)
    ids = tok.encode(tok.apply_chat_template(CHAT))
    text, n = library(ids, 20)
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content == text
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == n
    # max_completion_tokens is the newer name of max_tokens
    r2 = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=20)
    assert r2.choices[0].message.content == text


@pytest.mark.parametrize("chat", [False, True])
def test_stream_adds_up_to_the_answer(client, chat):
    kw = dict(model=MODEL, max_tokens=40, extra_body={"block_length": 8})
    if chat:
        full = client.chat.completions.create(messages=CHAT, **kw)
        chunks = list(client.chat.completions.create(messages=CHAT, stream=True,
                                                     stream_options={"include_usage": True}, **kw))
        assert chunks[0].choices[0].delta.role == "assistant"
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        expected = full.choices[0].message.content
        assert all(c.object == "chat.completion.chunk" for c in chunks)
    else:
        full = client.completions.create(prompt="for i in", **kw)
        chunks = list(client.completions.create(prompt="for i in", stream=True,
                                                stream_options={"include_usage": True}, **kw))
        pieces = [c.choices[0].text for c in chunks if c.choices]
        expected = full.choices[0].text
    assert "".join(pieces) == expected
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_n_samples_with_seed_are_distinct_and_reproducible(client):
    kw = dict(model=MODEL, prompt=["def add(a, b):", "class Foo:"], max_tokens=16, n=3, temperature=1.0, seed=5)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.index for c in a.choices] == list(range(6))
    texts = [c.text for c in a.choices]
    assert texts == [c.text for c in b.choices]  # same seed, same samples
    assert len(set(texts[:3])) > 1 and len(set(texts[3:])) > 1  # n different samples, not one copied
    c = client.completions.create(**{**kw, "seed": 6})
    assert [x.text for x in c.choices] != texts
    chat = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, n=2, temperature=1.0, seed=1)
    assert [ch.index for ch in chat.choices] == [0, 1]


def test_seeded_sample_is_the_same_alone_or_batched(server):
    def ask(body):
        return http(server.url + "/v1/completions", "POST", {"model": MODEL, "max_tokens": 24, **body})[1]

    seeded = {"prompt": "def add(a, b):", "n": 2, "temperature": 0.8, "seed": 11}
    with_alg_temp = {"prompt": "class Foo:", "temperature": 0.5, "seed": 3, "alg_temp": 0.5, "threshold": None}
    alone = [ask(seeded), ask(with_alg_temp)]
    others = [{"prompt": f"x = {i}", "temperature": 0} for i in range(4)] + \
             [{"prompt": f"y = {i}", "temperature": 1.0} for i in range(2)]  # unseeded: the server's RNG
    bodies = [seeded, with_alg_temp] + others + [{**o, "threshold": None} for o in others]
    barrier = threading.Barrier(len(bodies))

    def together(body):
        barrier.wait()
        return ask(body)

    _, before = http(server.url + "/metrics")
    with ThreadPoolExecutor(len(bodies)) as pool:
        out = list(pool.map(together, bodies))
    _, after = http(server.url + "/metrics")
    for a, b in zip(alone, out[:2]):
        assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert metric(after, "diffucoder_batches_total") - metric(before, "diffucoder_batches_total") < len(bodies)


def test_stop_sequences_cut_the_text(client):
    base = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=32,
                                     extra_body={"block_length": 8}).choices[0].text
    assert len(base) >= 6, base
    stop = base[3:5]
    expected = base[:base.find(stop)]
    r = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=32, stop=[stop, "\x00never"],
                                  extra_body={"block_length": 8})
    assert r.choices[0].text == expected and r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=32, stop=stop,
                                         stream=True, extra_body={"block_length": 8})
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_32_concurrent_requests_each_equal_its_solo_answer(server):
    # different prompt lengths (left padding) and two canvas lengths (two batch groups)
    prompts = [f"def f{i}(x):\n    return x" + " + 1" * (i % 7) for i in range(32)]
    sizes = [16 if i % 2 else 24 for i in range(32)]

    def ask(i):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        r = c.completions.create(model=MODEL, prompt=prompts[i], max_tokens=sizes[i])
        return r.choices[0].text, r.usage.completion_tokens

    solo = [ask(i) for i in range(32)]
    _, before = http(server.url + "/metrics")
    barrier = threading.Barrier(32)

    def ask_together(i):
        barrier.wait()
        return ask(i)

    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(ask_together, range(32)))
    assert together == solo
    assert len(set(solo)) > 16  # answers depend on the prompt: a mix-up would show
    _, after = http(server.url + "/metrics")
    batches = metric(after, "diffucoder_batches_total") - metric(before, "diffucoder_batches_total")
    rows = metric(after, "diffucoder_batch_rows_sum") - metric(before, "diffucoder_batch_rows_sum")
    assert rows == 32
    assert batches <= 16, f"{batches} decode calls for 32 concurrent requests: no batching"


BAD = [
    # (name, path, body, status, param)
    ("unknown model", "/v1/chat/completions", {"model": "gpt-4", "messages": CHAT}, 404, "model"),
    ("negative temperature", "/v1/chat/completions", {"model": MODEL, "messages": CHAT, "temperature": -0.5},
     400, "temperature"),
    ("top_p 0", "/v1/completions", {"model": MODEL, "prompt": "x", "top_p": 0}, 400, "top_p"),
    ("top_p above 1", "/v1/completions", {"model": MODEL, "prompt": "x", "top_p": 1.01}, 400, "top_p"),
    ("max_tokens beyond context", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 100000},
     400, "max_tokens"),
    ("unknown alg", "/v1/chat/completions", {"model": MODEL, "messages": CHAT, "alg": "greedy"}, 400, "alg"),
    ("unknown field", "/v1/completions", {"model": MODEL, "prompt": "x", "block_len": 8}, 400, "block_len"),
    ("n = 0", "/v1/completions", {"model": MODEL, "prompt": "x", "n": 0}, 400, "n"),
    ("n beyond max batch", "/v1/completions", {"model": MODEL, "prompt": "x", "n": 33}, 400, "n"),
    ("steps not a multiple of blocks", "/v1/completions",
     {"model": MODEL, "prompt": "x", "max_tokens": 64, "block_length": 32, "threshold": None, "steps": 5},
     400, "steps"),
    ("threshold with origin", "/v1/completions", {"model": MODEL, "prompt": "x", "alg": "origin"}, 400,
     "threshold"),
    ("bad cache mode", "/v1/completions", {"model": MODEL, "prompt": "x", "use_cache": "full"}, 400, "use_cache"),
    ("empty messages", "/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("unknown role", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
     400, "messages"),
    ("empty prompt", "/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
    ("token id outside vocabulary", "/v1/completions", {"model": MODEL, "prompt": [1, 2, 99999]}, 400, "prompt"),
    ("logprobs", "/v1/completions", {"model": MODEL, "prompt": "x", "logprobs": 2}, 400, None),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400, "model"),
    ("missing prompt", "/v1/completions", {"model": MODEL}, 400, "prompt"),
    ("string temperature", "/v1/completions", {"model": MODEL, "prompt": "x", "temperature": "hot"}, 400,
     "temperature"),
    ("boolean max_tokens", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": True}, 400,
     "max_tokens"),
    ("stream_options without stream", "/v1/completions",
     {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}}, 400, None),
]


@pytest.mark.parametrize("name,path,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_openai_error_json(server, name, path, body, status, param):
    got, err = http(server.url + path, "POST", body)
    assert got == status, err
    assert set(err) == {"error"} and set(err["error"]) == {"message", "type", "param", "code"}
    assert err["error"]["param"] == param, err
    assert "Traceback" not in err["error"]["message"] and "\n" not in err["error"]["message"]


@pytest.mark.parametrize("raw,what", [("{bad json", "malformed JSON"), ("[1, 2]", "JSON object"),
                                      ("", "JSON object")])
def test_malformed_bodies_are_400(server, raw, what):
    status, err = http(server.url + "/v1/chat/completions", "POST", raw)
    assert status == 400 and what in err["error"]["message"], err


def test_wrong_routes_and_methods(server):
    status, err = http(server.url + "/v1/nothing")
    assert status == 404 and "error" in err
    status, err = http(server.url + "/v1/completions")  # GET on a POST route
    assert status == 405 and "error" in err


def test_server_keeps_serving_after_bad_input(server, client):
    for _ in range(3):
        http(server.url + "/v1/completions", "POST", "{oops")
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=MODEL, prompt="x", temperature=-1)
    r = client.completions.create(model=MODEL, prompt="x", max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert http(server.url + "/health")[0] == 200


@pytest.mark.parametrize("args,message", [
    (["--model", "/nonexistent/model"], "no such folder"),
    (["--top-p", "2"], "--top-p must be in (0, 1]"),
    (["--threshold", "0.5", "--alg", "origin"], "--threshold needs a confidence order"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--batch-wait-ms", "500"], "--batch-wait-ms"),
    (["--port", "70000"], "--port must be in 0..65535"),
])
def test_serve_refuses_bad_options_before_loading(ckpt, capsys, args, message):
    from diffucoder.cli.main import main

    full = (["--model", str(ckpt)] if "--model" not in args else []) + args
    assert main(["serve", *full]) == 2
    assert message in capsys.readouterr().err
