"""``diffucoder serve`` under pressure: a full queue answers 429, a request past ``--request-timeout`` 504, a
client that disconnects (waiting or decoding, streamed or not) stops its work, and SIGTERM during a request
ends the process cleanly with nothing left behind.

The slow request decodes a 64-token canvas in 50,000 steps (a step-count schedule reveals nothing until the
last steps), tens of seconds even for the tiny model: anything that ends it sooner was the server's doing."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_util import ServerProcess, build_checkpoint, http, wait_for  # noqa: E402

MODEL = "tiny"
SLOW = {"max_tokens": 64, "steps": 50000, "block_length": None, "threshold": None}
TIMEOUT = 6.0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("serve-limits") / MODEL)


@pytest.fixture(scope="module")
def server(ckpt):
    s = ServerProcess(ckpt, "--max-batch", "1", "--max-queue", "1", "--batch-wait-ms", "0",
                      "--request-timeout", str(TIMEOUT))
    yield s
    rc = s.stop()
    assert rc in (0, -signal.SIGTERM) and "stopped serving" in s.log, s.log
    assert "Traceback" not in s.log, s.log


def health(server) -> dict:
    return http(server.url + "/health")[1]


def idle(server) -> bool:
    h = health(server)
    return h["batch_rows"] == 0 and h["queue_depth"] == 0


def raw_request(port: int, path: str, body: dict) -> socket.socket:
    """Send a POST on a raw socket (so the test can hang up whenever it likes)."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def test_disconnect_while_decoding_aborts_the_batch(server):
    assert wait_for(lambda: idle(server))
    s = raw_request(server.port, "/v1/completions", {"model": MODEL, "prompt": "x", **SLOW})
    assert wait_for(lambda: health(server)["batch_rows"] == 1, timeout=10)
    t0 = time.monotonic()
    s.close()
    assert wait_for(lambda: health(server)["batch_rows"] == 0, timeout=TIMEOUT - 1)
    assert time.monotonic() - t0 < TIMEOUT - 1  # the disconnect stopped it, not the timeout


def test_disconnect_of_a_stream_aborts_the_batch(server):
    assert wait_for(lambda: idle(server))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_body=SLOW)
    first = next(iter(stream))  # the role chunk: the batch has started
    assert first.choices[0].delta.role == "assistant"
    assert health(server)["batch_rows"] == 1
    t0 = time.monotonic()
    stream.close()
    assert wait_for(lambda: health(server)["batch_rows"] == 0, timeout=TIMEOUT - 1)
    assert time.monotonic() - t0 < TIMEOUT - 1


def test_full_queue_answers_429_and_a_waiting_client_can_leave(server):
    assert wait_for(lambda: idle(server))
    running = raw_request(server.port, "/v1/completions", {"model": MODEL, "prompt": "x", **SLOW})
    assert wait_for(lambda: health(server)["batch_rows"] == 1, timeout=10)
    waiting = raw_request(server.port, "/v1/completions", {"model": MODEL, "prompt": "y", **SLOW})
    assert wait_for(lambda: health(server)["queue_depth"] == 1, timeout=10)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.RateLimitError) as e:
        client.completions.create(model=MODEL, prompt="z", max_tokens=4)
    assert e.value.status_code == 429 and "queue is full" in str(e.value)
    waiting.close()  # leaves the queue without ever being decoded
    assert wait_for(lambda: health(server)["queue_depth"] == 0, timeout=5)
    running.close()
    assert wait_for(lambda: idle(server), timeout=5)
    r = client.completions.create(model=MODEL, prompt="z", max_tokens=4)  # and it serves again
    assert r.choices[0].finish_reason in ("stop", "length")


def test_request_timeout_is_504_and_stops_the_work(server):
    assert wait_for(lambda: idle(server))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model=MODEL, prompt="x", extra_body=SLOW)
    took = time.monotonic() - t0
    assert e.value.status_code == 504 and "timed out" in str(e.value)
    assert TIMEOUT - 0.5 < took < TIMEOUT + 10
    assert wait_for(lambda: health(server)["batch_rows"] == 0, timeout=5)


def test_sigterm_during_a_request_leaves_nothing_behind(ckpt):
    s = ServerProcess(ckpt, "--shutdown-timeout", "2")
    try:
        sock = raw_request(s.port, "/v1/completions", {"model": MODEL, "prompt": "x", **SLOW})
        assert wait_for(lambda: http(s.url + "/health")[1]["batch_rows"] == 1, timeout=10)
        children = s.children()
        t0 = time.monotonic()
        rc = s.stop(timeout=30)
        assert time.monotonic() - t0 < 15
        assert rc in (0, -signal.SIGTERM) and "stopped serving" in s.log, s.log
        assert children == []
        with socket.socket() as probe:  # the port is free again
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", s.port))
        sock.close()
    finally:
        s.kill()
