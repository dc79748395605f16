import gzip

import pytest

from diffucoder.data.sft import read_sft_jsonl
from diffucoder.jsonl import iter_jsonl


def test_rows_with_their_place_blank_lines_skipped_and_gzip(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"x": 1}\n\n{"x": 2}\n')
    assert list(iter_jsonl(f)) == [(f"{f}:1", {"x": 1}), (f"{f}:3", {"x": 2})]
    g = tmp_path / "a.jsonl.gz"
    with gzip.open(g, "wt") as out:
        out.write('{"x": 3}\n')
    assert [r for _, r in iter_jsonl(g)] == [{"x": 3}]


def test_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="SFT file not found"):
        read_sft_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "c"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_sft_jsonl(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"wrong.jsonl:1: needs 'messages'"):
        read_sft_jsonl(wrong)
