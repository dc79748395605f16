"""The live view at ``GET /`` in headless Chromium (Debian's ``chromium``; skipped when it is absent): load the
page, type a prompt, submit, watch the canvas unmask, screenshot, and check the final text is the API's answer."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

from serve_util import Browser, ServerProcess, build_checkpoint, find_chromium, http, run_live_view  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup.sh installs "
                                                         "Debian's chromium when run as root with apt)")


def test_live_view_unmasks_and_shows_the_final_answer(tmp_path):
    ckpt = build_checkpoint(tmp_path / "tiny")
    server = ServerProcess(ckpt)
    browser = None
    try:
        status, page = http(server.url + "/")
        assert status == 200 and "diffucoder live view" in page
        prompt = "Write add(a, b)."
        fields = {"max_tokens": 24, "block_length": 8, "threshold": "", "temperature": 0, "chat": True}
        browser = Browser(CHROMIUM, tmp_path / "profile")
        result = run_live_view(browser, server.url + "/", prompt, fields)
        shot = browser.screenshot(tmp_path / "live-view.png")
        assert result["done"] and result["state"] == "1", result
        assert result["error"] == ""
        assert result["status"].startswith("done in"), result
        assert result["steps"] > 1  # the canvas was drawn step by step
        _, api = http(server.url + "/v1/chat/completions", "POST",
                      {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": 24,
                       "block_length": 8, "temperature": 0})
        assert result["final"] == api["choices"][0]["message"]["content"]
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("DIFFUCODER_LIVE_VIEW_PNG"):
            shutil.copy(shot, Path(os.environ["DIFFUCODER_LIVE_VIEW_PNG"]))
    finally:
        if browser is not None:
            browser.close()
        rc = server.stop()
        assert rc in (0, -signal.SIGTERM), server.log
