"""benchmarks/copy_probe.py: which answer tokens it scores, and a run on a tiny random model."""

from __future__ import annotations

from conftest import load_benchmark


def test_token_groups_pick_the_copied_tokens():
    mod = load_benchmark("copy_probe")
    # the demo tokenizer's pieces of "```python\ndef is_divisible_by_7(n):\n    return n % 7 == 0\n```\n"
    toks = ["```", "python", "\n", "def", " is", "_di", "visible", "_by", "_", "7", "(n", "):\n", "   ", " return",
            " n", " %", " ", "7", " ==", " ", "0", "\n", "```\n", "<|im_end|>"]
    groups = mod.token_groups(toks, ["n"])
    assert {j for j, g in groups.items() if g == "name"} == {5, 6, 7, 8, 9}  # not " is" (right after def)
    assert {j for j, g in groups.items() if g == "arg"} == {14}  # the body's n, not the def line's "(n"
    assert {j for j, g in groups.items() if g == "digit"} == {17, 20}  # body digits only, not the name's 7
    assert mod.token_groups(["```", "python", "\n", "oops"], ["n"]) == {}  # no def line: nothing to score


def test_probe_runs_on_a_tiny_model(tmp_path, tiny_model, tiny_tokenizer):
    from diffucoder.tasks import generate_tasks

    mod = load_benchmark("copy_probe")
    tiny_model.save_pretrained(tmp_path / "m", tokenizer=tiny_tokenizer)
    res = mod.probe(str(tmp_path / "m"), generate_tasks(3, "test", seed=0, tiers=("easy",)))
    assert res and set(res) <= {"digit", "arg", "name"}
    for ce, acc, n in res.values():
        assert ce > 0 and 0.0 <= acc <= 1.0 and n > 0
