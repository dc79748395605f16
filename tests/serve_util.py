"""Helpers of the ``diffucoder serve`` tests: a tiny checkpoint, a real server process, raw HTTP calls."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n",
         "class Foo:\n    def bar(self):\n        return None\n", "x = [i * 2 for i in items if i > 3]\n",
         "with open(path) as f:\n    data = f.read()\n"] * 20


def build_checkpoint(path: Path, context: int = 512) -> Path:
    """A random tiny Dream model (0.1M parameters) with a 300-id BPE, saved as a checkpoint folder.

    ``initializer_range=0.2`` makes its distributions peaked, so threshold decoding reveals several tokens a step
    and answers depend on the prompt."""
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS, vocab_size=300)
    cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size + 20, mask_token_id=tok.mask_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             tie_word_embeddings=False, initializer_range=0.2, max_position_embeddings=context)
    model = DreamModel(cfg, init_weights=False)
    model.init_weights(torch.Generator().manual_seed(0))
    model.save_pretrained(path, tokenizer=tok)
    return path


class ServerProcess:
    """``diffucoder serve --port 0 ...`` in a subprocess; ``url`` once ready; :meth:`stop` with SIGTERM."""

    def __init__(self, model: Path, *args: str, ready_timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "diffucoder.cli.main", "serve", "--model", str(model), "--port", "0",
               "--threads", "1", "--log-level", "warning", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout) or self.url is None:
            self.kill()
            raise RuntimeError("server did not start:\n" + self.log)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on (http://\S+?:\d+)", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()  # the process ended

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    def children(self) -> list[int]:
        """Pids whose parent is the server."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(d.name))
        return out

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; returns the exit code (kills it and raises if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"server did not exit within {timeout} s of SIGTERM:\n{self.log}") from None
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def http(url: str, method: str = "GET", body: bytes | str | dict | None = None,
         content_type: str = "application/json", timeout: float = 60.0) -> tuple[int, dict | str]:
    """(status, parsed JSON or text) of one request; error statuses are returned, not raised."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read().decode(), e.headers.get("Content-Type", "")
    return status, (json.loads(raw) if "json" in ctype else raw)


def metric(text: str, name: str) -> float:
    """The value of an unlabelled Prometheus sample ``name`` in a /metrics body."""
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    if m is None:
        raise KeyError(name)
    return float(m.group(1))


def wait_for(predicate, timeout: float = 20.0, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


# -- headless Chromium over the DevTools protocol ------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--remote-debugging-port=0", "--window-size=1280,1100"]


def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A headless Chromium with a fresh profile, driven over its DevTools websocket (``websockets``)."""

    def __init__(self, executable: str, profile: Path, timeout: float = 60.0) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        found = threading.Event()
        self.ws_url: str | None = None

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m and self.ws_url is None:
                    self.ws_url = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(timeout) or self.ws_url is None:
            self.close()
            raise RuntimeError("chromium did not start:\n" + "".join(self.lines))
        self._connection = connect(self.ws_url, max_size=None, open_timeout=timeout)
        self.ws = self._connection.__enter__()
        self._id = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if getattr(self, "session", None):
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv(timeout))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str) -> object:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, timeout: float = 30.0) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})
        if not wait_for(lambda: self.js("document.readyState") == "complete", timeout):
            raise RuntimeError(f"{url} did not load")

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))  # browser-level: no session
                self.proc.wait(10)
                self._connection.__exit__(None, None, None)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this Browser started
                self.proc.wait(10)


def run_live_view(browser: Browser, url: str, prompt: str, fields: dict, timeout: float = 120.0) -> dict:
    """Load the live view, type ``prompt``, set the form ``fields`` (id -> value), click Generate and wait for the
    final answer; returns the page's final text, status line, error line and number of steps drawn."""
    browser.open(url)
    browser.js(f"document.getElementById('prompt').value = {json.dumps(prompt)}")
    for key, value in fields.items():
        if isinstance(value, bool):
            browser.js(f"document.getElementById({json.dumps(key)}).checked = {json.dumps(value)}")
        else:
            browser.js(f"document.getElementById({json.dumps(key)}).value = {json.dumps(str(value))}")
    browser.js("document.getElementById('go').click()")
    done = wait_for(lambda: browser.js("document.getElementById('final').dataset.done") != "0", timeout, 0.1)
    return {"done": done, "state": browser.js("document.getElementById('final').dataset.done"),
            "final": browser.js("document.getElementById('final').textContent"),
            "status": browser.js("document.getElementById('status').textContent"),
            "error": browser.js("document.getElementById('error').textContent"),
            "steps": browser.js("lastStep + 1")}
