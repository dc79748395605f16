"""The live-view page served at ``GET /``: send a prompt, watch the canvas unmask step by step.

The page posts to ``POST /live`` (same settings as the chat endpoint, plus ``prompt`` and ``chat``) and reads
its server-sent events: ``canvas`` (after every step: each completion position's token text or null for
[MASK], how many leading tokens are settled, forward passes so far), ``text`` (newly final text), ``done``
(the final answer, finish reason, tokens, seconds) and ``error``. It draws the canvas (masks as shaded blocks,
the tokens revealed by the latest step highlighted, the settled prefix underlined) and a reveal map (one row
per step, one column per position, a cell coloured when the position is revealed at that step) in which
semi-autoregressive blocks and parallel threshold steps can be seen. No external assets: it works offline.
"""

from __future__ import annotations

import html

_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>diffucoder live view: __MODEL__</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 24px; color: #1d2330; background: #f7f7f9; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: #667; margin-bottom: 16px; font-size: 13px; }
  textarea { width: 100%; height: 70px; font: 14px ui-monospace, monospace; box-sizing: border-box; }
  .row { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin: 10px 0; font-size: 13px; }
  .row input[type=number] { width: 70px; }
  button { padding: 6px 18px; font-size: 14px; cursor: pointer; }
  .panel { background: white; border: 1px solid #dde; border-radius: 6px; padding: 12px; margin-top: 12px; }
  .panel h2 { font-size: 13px; margin: 0 0 8px; color: #556; font-weight: 600; }
  #canvas { font: 14px/1.6 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; min-height: 40px; }
  .m { color: #b8bccb; }
  .new { background: #ffe066; }
  .settled { border-bottom: 2px solid #4caf50; }
  #final { font: 14px ui-monospace, monospace; white-space: pre-wrap; margin: 0; min-height: 20px; }
  #status { font-size: 13px; color: #445; }
  #error { color: #b00020; font-size: 13px; }
  #timeline { image-rendering: pixelated; border: 1px solid #eee; max-width: 100%; }
</style>
</head>
<body>
<h1>diffucoder live view</h1>
<div class="sub">model <b id="model">__MODEL__</b>: a masked-diffusion coder decodes the whole answer at once,
revealing tokens in confidence order. Each step is shown as it happens.</div>
<textarea id="prompt" placeholder="Write a function that reverses a string.">Write a function add(a, b) that returns the sum of a and b.</textarea>
<div class="row">
  <label><input type="checkbox" id="chat" checked> chat template</label>
  <label>max tokens <input id="max_tokens" type="number" value="64" min="1"></label>
  <label>temperature <input id="temperature" type="number" value="0" min="0" step="0.1"></label>
  <label>block length <input id="block_length" type="number" value="" min="1" placeholder="server"></label>
  <label>threshold <input id="threshold" type="number" value="" min="0" max="1" step="0.05" placeholder="server"></label>
  <label>alg <select id="alg"><option value="">server</option><option>entropy</option><option>maskgit_plus</option>
    <option>topk_margin</option><option>origin</option></select></label>
  <button id="go">Generate</button>
</div>
<div id="status">idle</div>
<div id="error"></div>
<div class="panel"><h2>canvas</h2><div id="canvas"></div></div>
<div class="panel"><h2>reveal map (rows: steps, columns: positions)</h2><canvas id="timeline" width="8" height="8"></canvas></div>
<div class="panel"><h2>final answer</h2><pre id="final" data-done="0"></pre></div>
<script>
const $ = (id) => document.getElementById(id);
let prev = null, revealStep = null, lastStep = -1;

function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }

function drawCanvas(ev) {
  const parts = [];
  ev.tokens.forEach((t, i) => {
    if (t === null) { parts.push('<span class="m">\u2591</span>'); return; }
    const cls = [];
    if (prev && prev[i] === null) cls.push("new");
    if (i < ev.settled) cls.push("settled");
    parts.push('<span class="' + cls.join(" ") + '">' + esc(t) + '</span>');
  });
  $("canvas").innerHTML = parts.join("");
  if (!revealStep) revealStep = ev.tokens.map(() => -1);
  ev.tokens.forEach((t, i) => { if (t !== null && revealStep[i] < 0) revealStep[i] = ev.step; });
  prev = ev.tokens;
  lastStep = ev.step;
  drawTimeline(ev.tokens.length);
  const masked = ev.tokens.filter((t) => t === null).length;
  $("status").textContent = "step " + (ev.step + 1) + ": " + masked + " of " + ev.tokens.length +
    " masked, " + ev.settled + " settled, " + ev.forward_passes + " forward passes";
}

function drawTimeline(n) {
  const cell = Math.max(3, Math.min(12, Math.floor(900 / n)));
  const c = $("timeline"), rows = lastStep + 1;
  c.width = n * cell; c.height = Math.max(rows, 1) * cell;
  const g = c.getContext("2d");
  g.fillStyle = "#fafafa"; g.fillRect(0, 0, c.width, c.height);
  for (let i = 0; i < n; i++) {
    const s = revealStep[i];
    if (s < 0) continue;
    g.fillStyle = "#e3e6ee"; g.fillRect(i * cell, (s + 1) * cell, cell, (rows - s - 1) * cell);
    g.fillStyle = "hsl(" + Math.round(220 - 200 * s / Math.max(rows - 1, 1)) + ",70%,50%)";
    g.fillRect(i * cell, s * cell, cell - 1, cell - 1);
  }
}

function body() {
  const b = { prompt: $("prompt").value, chat: $("chat").checked, max_tokens: +$("max_tokens").value,
              temperature: +$("temperature").value };
  if ($("block_length").value !== "") b.block_length = +$("block_length").value;
  if ($("threshold").value !== "") b.threshold = +$("threshold").value;
  if ($("alg").value !== "") b.alg = $("alg").value;
  return b;
}

async function run() {
  prev = null; revealStep = null; lastStep = -1;
  $("error").textContent = ""; $("final").textContent = ""; $("final").dataset.done = "0";
  $("canvas").innerHTML = ""; $("status").textContent = "queued";
  $("go").disabled = true;
  try {
    const resp = await fetch("/live", { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(body()) });
    if (!resp.ok) {
      const j = await resp.json().catch(() => ({}));
      throw new Error((j.error && j.error.message) || ("HTTP " + resp.status));
    }
    const reader = resp.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let k;
      while ((k = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, k); buf = buf.slice(k + 2);
        let type = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) type = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (!data) continue;
        const ev = JSON.parse(data);
        if (type === "canvas") drawCanvas(ev);
        else if (type === "text") $("final").textContent += ev.text;
        else if (type === "error") throw new Error(ev.message);
        else if (type === "done") {
          $("final").textContent = ev.text;
          $("final").dataset.done = "1";
          $("status").textContent = "done in " + ev.seconds.toFixed(2) + " s: " + ev.completion_tokens +
            " tokens, " + ev.forward_passes + " forward passes, finish reason " + ev.finish_reason;
        }
      }
    }
  } catch (e) {
    $("error").textContent = "error: " + e.message;
    $("final").dataset.done = "error";
  } finally {
    $("go").disabled = false;
  }
}
$("go").addEventListener("click", run);
</script>
</body>
</html>
"""


def page(model_name: str) -> str:
    """The page's HTML for the served model."""
    return _PAGE.replace("__MODEL__", html.escape(model_name))
