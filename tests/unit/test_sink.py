"""The manifest Datasink's commit protocol without Ray: parts count only once their marker is
written; merging is idempotent, lists each id once, and picks up a crashed run's parts."""
import pyarrow as pa

from dataset_builder.core import storage
from dataset_builder.sink import COMMITS, merge_commits, write_part

SCHEMA = pa.schema([("id", pa.string()), ("x", pa.int64())])


def _part(uri, name, ids):
    write_part(uri, name, pa.Table.from_pylist([{"id": i, "x": n} for n, i in enumerate(ids)],
                                               schema=SCHEMA))


def test_markers_merge_once_and_ids_are_listed_once(tmp_path):
    uri = str(tmp_path / "ds")
    _part(uri, "part-a-00000.parquet", ["1", "2"])
    _part(uri, "part-a-00001.parquet", ["3"])
    assert storage.read_dataset(uri) is None  # nothing is listed before the merge
    m = merge_commits(uri)
    assert m["rows"] == 3 and not list((tmp_path / "ds" / COMMITS).iterdir())
    assert merge_commits(uri) == storage.load_manifest(uri)  # idempotent
    # A later run (or a retried task) wrote ids already listed: only new ids are added.
    _part(uri, "part-b-00000.parquet", ["3", "4"])
    m = merge_commits(uri)
    ids = storage.read_dataset(uri).column("id").to_pylist()
    assert sorted(ids) == ["1", "2", "3", "4"] and m["rows"] == 4


def test_a_part_without_marker_is_invisible_and_a_crashed_runs_parts_are_kept(tmp_path):
    uri = str(tmp_path / "ds")
    storage.write_bytes_atomic(f"{uri}/part-x-00000.parquet", storage.table_to_parquet_bytes(
        pa.Table.from_pylist([{"id": "lost", "x": 0}], schema=SCHEMA)))  # died before marker
    _part(uri, "part-y-00003.parquet", ["kept"])  # committed; the driver died before merging
    merge_commits(uri)
    assert storage.read_dataset(uri).column("id").to_pylist() == ["kept"]


def test_rejects_keep_repeated_ids(tmp_path):
    uri = str(tmp_path / "rej")
    _part(uri, "part-a-00000.parquet", [None, None])
    _part(uri, "part-b-00000.parquet", [None])
    assert merge_commits(uri, unique_ids=False)["rows"] == 3


def test_an_output_with_no_rows_reads_as_an_empty_table_with_its_schema(tmp_path):
    import pyarrow as pa
    schema = pa.schema([("id", pa.string()), ("reason", pa.string())])
    uri = str(tmp_path / "rejects")
    merge_commits(uri, unique_ids=False, schema=schema)     # a run that rejected nothing
    table = storage.read_dataset(uri)
    assert table.num_rows == 0 and table.column("id").to_pylist() == []
