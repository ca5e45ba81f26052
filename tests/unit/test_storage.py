import pytest

from dataset_builder.core import storage


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds")
    request.getfixturevalue("moto_s3")
    return f"s3://test-bucket/{tmp_path.name}/ds"


def test_jsonl_json_roundtrip(base):
    rows = [{"a": 1, "t": "中文"}, {"a": 2, "t": None}]
    storage.write_jsonl(storage.join(base, "x.jsonl"), rows)
    assert storage.read_jsonl(storage.join(base, "x.jsonl")) == rows
    storage.write_json(storage.join(base, "s.json"), {"k": [1, 2]})
    assert storage.read_json(storage.join(base, "s.json")) == {"k": [1, 2]}


def test_dataset_parts_visible_only_after_commit(base):
    w = storage.DatasetWriter(base, extra={"config": {"x": 1}})
    w.write([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    assert storage.read_dataset(base) is None  # written, not committed: invisible
    m = w.commit()
    assert m["rows"] == 2 and m["files"][0]["path"] == "part-00000.parquet"
    assert len(m["files"][0]["sha256"]) == 64 and m["config"] == {"x": 1}
    # a crashed writer leaves a part that no manifest lists; the next writer overwrites its name
    storage.DatasetWriter(base).write([{"id": "zombie", "v": 0}])
    w2 = storage.DatasetWriter(base)
    w2.write([{"id": "c", "v": 3}])
    w2.commit()
    ids = storage.read_dataset(base).column("id").to_pylist()
    assert ids == ["a", "b", "c"]
    fs, path = storage.get_fs(base)
    assert not [p for p in fs.ls(path, detail=False) if "_tmp-" in p]


def test_unreachable_endpoint_fails_fast_with_clear_message():
    cfg = storage.StorageConfig(endpoint_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(storage.StorageError, match="cannot reach storage for s3://b/x"):
        storage.check_reachable("s3://b/x", cfg)


def test_missing_local_input():
    with pytest.raises(storage.StorageError, match="input not found"):
        storage.check_reachable("/nonexistent/in.jsonl", must_exist=True)


def test_dead_endpoint_without_credentials_names_both(monkeypatch):
    from dataset_builder.core import storage
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = storage.StorageConfig(endpoint_url="http://127.0.0.1:9")
    with pytest.raises(storage.StorageError) as e:
        storage.check_reachable("s3://no-creds-bucket/x", cfg)
    msg = str(e.value)
    assert "127.0.0.1:9 is not reachable" in msg or "127.0.0.1:9" in msg and "refused" in msg
    assert len(msg.splitlines()) == 1


def test_a_dataset_of_zero_rows_reads_as_an_empty_table_with_its_schema(tmp_path):
    import pyarrow as pa
    schema = pa.schema([("id", pa.string()), ("words", pa.int64())])
    base = str(tmp_path / "empty")
    assert storage.read_dataset(base) is None          # nothing committed: not a dataset
    w = storage.DatasetWriter(base)
    assert w.write([], schema) is None                 # no part for zero rows
    w.commit()
    table = storage.read_dataset(base)
    assert table is not None and table.num_rows == 0 and table.schema.equals(schema)
    w2 = storage.DatasetWriter(str(tmp_path / "bare"))
    w2.commit()                                        # never saw a schema: no columns
    assert storage.read_dataset(str(tmp_path / "bare")).num_columns == 0
