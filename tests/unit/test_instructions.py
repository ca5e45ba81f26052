import json

import pytest

from dataset_builder.core import instructions as ins
from dataset_builder.core.storage import StorageError
from dataset_builder.core.text import stable_id


def test_bad_rows_become_rejects_with_line_numbers(tmp_path):
    lines = [
        json.dumps({"prompt": "Write a 3000-word essay on rivers."}).encode(),
        b"{not json",
        json.dumps({"text": "no prompt field"}).encode(),
        json.dumps({"prompt": "   "}).encode(),
        json.dumps({"prompt": 42}).encode(),
        b'{"prompt": "caf\xe9 latte"}',  # latin-1 byte, not UTF-8
        json.dumps(["a", "list"]).encode(),
        b"",
        json.dumps({"prompt": "写一篇两千字的文章", "required_words": "many"}).encode(),
        json.dumps({"prompt": "请写一篇3000字的文章"}, ensure_ascii=False).encode(),
    ]
    p = tmp_path / "in.jsonl"
    p.write_bytes(b"\n".join(lines))
    rows, rejects = ins.read_instructions(str(p))
    assert [r["line"] for r in rows] == [1, 10]
    assert rows[1]["lang"] == "zh" and rows[0]["lang"] == "en"
    assert rows[0]["id"] == stable_id("Write a 3000-word essay on rivers.")
    by_line = {r["line"]: r["reason"].split(":")[0] for r in rejects}
    assert by_line == {2: "malformed_json", 3: "missing_prompt", 4: "empty_prompt",
                       5: "prompt_not_string", 6: "invalid_utf8", 7: "not_an_object",
                       8: "blank_line", 9: "bad_required_words"}
    # every line is accounted for: rows + rejects = lines (a final newline is not a line)
    assert len(rows) + len(rejects) == len(lines)
    p.write_bytes(b"\n".join(lines) + b"\n")
    again, again_rejects = ins.read_instructions(str(p))
    assert len(again) + len(again_rejects) == len(lines)


def test_ids_hash_the_normalized_prompt():
    """Exact duplicates share an id after normalization (the generation job keeps the first
    of each id: test_generation_stage)."""
    rows = [ins.validate({"prompt": p}, i, "s")[0]
            for i, p in enumerate(["Write  ABOUT cats", "write about cats", "dogs"], 1)]
    assert rows[0]["id"] == rows[1]["id"] != rows[2]["id"]


def test_missing_input_is_one_clear_error(tmp_path):
    with pytest.raises(StorageError, match="input not found"):
        ins.read_instructions(str(tmp_path / "missing.jsonl"))


def test_parquet_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"prompt": ["Write a 2,500 words report", None]}), tmp_path / "i.parquet")
    rows, rejects = ins.read_instructions(str(tmp_path / "i.parquet"))
    assert len(rows) == 1 and rejects[0]["reason"] == "missing_prompt" and rejects[0]["line"] == 2
