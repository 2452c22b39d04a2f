"""TransferSet: bit-exact round trips, provenance, nested subsets, streaming, corruption errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import DatasetError, DfkdError, NotATransferSet
from datafree_kd.transfer_set import FORMAT, PREVIEW_CELL_PX, TransferSet, locate

torch.set_num_threads(1)

INFO = DatasetInfo("toy", num_classes=4, in_channels=1, image_size=6, mean=(0.5,), std=(0.25,),
                   class_names=("zero", "one", "two", "three"))
RGB = DatasetInfo("toy-rgb", num_classes=3, in_channels=3, image_size=5, mean=(0.5,) * 3, std=(0.25,) * 3)


def make(path: Path, info: DatasetInfo = INFO, dtype: str = "uint8", shard_size: int = 7) -> TransferSet:
    return TransferSet.create(path, info, "noise", {"lr": 0.1, "steps": 3}, "abcdef0123456789",
                              seed=3, dtype=dtype, shard_size=shard_size)


def batch(n: int, info: DatasetInfo = INFO, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *info.shape, generator=g)
    x[0].fill_(1.0)  # the edges of [0, 1] must survive
    x[-1].fill_(0.0)
    return x, torch.randn(n, info.num_classes, generator=g), torch.randint(0, info.num_classes, (n,), generator=g)


def filled(path: Path, sizes=(5, 9, 4), dtype="uint8", logits=True, labels=True, info=INFO, shard_size=7):
    ts = make(path, info, dtype, shard_size)
    xs, ls, ys = [], [], []
    for i, n in enumerate(sizes):
        x, lg, y = batch(n, info, seed=i)
        ts.append(x, lg if logits else None, y if labels else None)
        xs.append(x), ls.append(lg), ys.append(y)
    ts.flush()
    return ts, torch.cat(xs), torch.cat(ls), torch.cat(ys)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
@pytest.mark.parametrize("logits,labels", [(True, True), (True, False), (False, True), (False, False)])
def test_round_trip_is_bit_exact(tmp_path: Path, dtype: str, logits: bool, labels: bool) -> None:
    ts, x, lg, y = filled(tmp_path / "set", dtype=dtype, logits=logits, labels=labels)
    assert len(ts) == 18 and [s["count"] for s in ts.meta["shards"]] == [7, 7, 4]
    back = TransferSet.open(tmp_path / "set")
    data = back.load()
    if dtype == "uint8":
        assert data.images.dtype == torch.uint8
        assert torch.equal(data.images, (x * 255).round().to(torch.uint8))
    else:
        assert data.images.dtype == torch.float16
        assert torch.equal(data.images, x.to(torch.float16))
    assert float(data.as_float(data.images).min()) == 0.0 and float(data.as_float(data.images).max()) == 1.0
    if labels:
        assert torch.equal(data.labels, y)
    elif logits:
        assert torch.equal(data.labels, lg.argmax(1))
    else:
        assert torch.equal(data.labels, torch.zeros(18, dtype=torch.long))
    if logits:
        assert torch.equal(back.load_logits(), lg)
    else:
        with pytest.raises(DatasetError, match="no teacher logits"):
            back.load_logits()
    # a second write of what was read gives the same bytes' worth of data
    again = make(tmp_path / "copy", dtype=dtype, shard_size=5)
    for b in back.iter_batches(4):
        again.append(b.images, b.teacher_logits, b.labels if labels else None)
    again.flush()
    assert torch.equal(TransferSet.open(tmp_path / "copy").load().images, data.images)


def test_meta_records_provenance(tmp_path: Path) -> None:
    filled(tmp_path / "set", dtype="float16")
    meta = json.loads((tmp_path / "set" / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["format_version"] == 1
    assert meta["synthesizer"] == "noise" and meta["synthesizer_config"] == {"lr": 0.1, "steps": 3}
    assert meta["teacher_fingerprint"] == "abcdef0123456789" and meta["seed"] == 3
    assert meta["count"] == 18 and meta["shape"] == [1, 6, 6] and meta["num_classes"] == 4
    assert meta["dtype"] == "float16" and meta["created"]
    assert DatasetInfo.from_dict(meta["dataset_info"]) == INFO
    for i, shard in enumerate(meta["shards"]):
        assert shard["file"] == f"shard-{i:05d}.pt" and len(shard["sha256"]) == 64
        assert (tmp_path / "set" / shard["file"]).stat().st_size == shard["bytes"]
    assert TransferSet.open(tmp_path / "set").info == INFO


def test_meta_is_valid_after_every_shard_without_flush(tmp_path: Path) -> None:
    ts = make(tmp_path / "set", shard_size=4)
    assert len(TransferSet.open(tmp_path / "set")) == 0
    ts.append(*batch(10))  # two full shards written, two images buffered (an "interrupted" run)
    assert ts.pending == 2
    assert len(TransferSet.open(tmp_path / "set")) == 8
    with pytest.raises(DfkdError, match="flush"):
        ts.load()


def test_subsets_are_nested_prefixes(tmp_path: Path) -> None:
    ts, x, _, _ = filled(tmp_path / "set", sizes=(11, 12))
    full = ts.load().images
    small, mid = ts.subset(5), ts.subset(16)
    assert len(small) == 5 and len(mid) == 16
    assert torch.equal(small.load().images, full[:5])
    assert torch.equal(mid.load().images[:5], small.load().images)
    assert torch.equal(mid.load().images, full[:16])
    assert torch.equal(mid.subset(5).load().images, small.load().images)
    assert torch.equal(mid.load_logits(), ts.load_logits()[:16])
    assert torch.equal(torch.cat([b.images for b in mid.iter_batches(3, as_float=False)]), full[:16])
    assert mid.provenance()["count"] == 16 and mid.provenance()["total_count"] == 23
    with pytest.raises(DfkdError, match="read-only"):
        mid.append(*batch(2))
    for n in (24, 1000):
        with pytest.raises(DatasetError, match="only 23"):
            ts.subset(n)
    with pytest.raises(DatasetError, match="only 16"):
        mid.subset(17)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 10, 50])
def test_iter_batches_streams_the_same_items_as_load(tmp_path: Path, batch_size: int) -> None:
    ts, *_ = filled(tmp_path / "set", sizes=(5, 9, 4), labels=False)
    data = ts.load()
    batches = list(ts.iter_batches(batch_size))
    assert [len(b.images) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert torch.equal(torch.cat([b.images for b in batches]), data.as_float(data.images))
    assert torch.equal(torch.cat([b.labels for b in batches]), data.labels)
    assert torch.equal(torch.cat([b.teacher_logits for b in batches]), ts.load_logits())
    assert len(list(ts.iter_batches(batch_size, drop_last=True))) == 18 // batch_size


def test_truncated_altered_and_missing_shards(tmp_path: Path) -> None:
    filled(tmp_path / "set")
    shard = tmp_path / "set" / "shard-00001.pt"
    original = shard.read_bytes()

    shard.write_bytes(original[:-10])
    with pytest.raises(DatasetError, match="shard-00001.pt.*truncated") as err:
        TransferSet.open(tmp_path / "set")
    assert "\n" not in str(err.value)

    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0xFF
    shard.write_bytes(bytes(altered))
    with pytest.raises(DatasetError, match="shard-00001.pt.*checksum mismatch"):
        TransferSet.open(tmp_path / "set")
    TransferSet.open(tmp_path / "set", verify=False)  # size still right: only the checksum tells

    shard.unlink()
    with pytest.raises(DatasetError, match="shard-00001.pt.*missing"):
        TransferSet.open(tmp_path / "set")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"format": "other"}', ""])
def test_bad_meta_json(tmp_path: Path, text: str) -> None:
    filled(tmp_path / "set")
    (tmp_path / "set" / "meta.json").write_text(text)
    with pytest.raises(DatasetError, match="meta.json"):
        TransferSet.open(tmp_path / "set")


def test_meta_json_missing_or_inconsistent(tmp_path: Path) -> None:
    filled(tmp_path / "set")
    meta_path = tmp_path / "set" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["count"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="count 99"):
        TransferSet.open(tmp_path / "set")
    meta["count"], meta["shards"][0]["file"] = 18, "../escape.pt"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="invalid or repeated file name"):
        TransferSet.open(tmp_path / "set")
    meta_path.unlink()
    with pytest.raises(DatasetError, match="meta.json missing"):
        TransferSet.open(tmp_path / "set")
    with pytest.raises(DatasetError, match="not found"):
        TransferSet.open(tmp_path / "nowhere")


def test_open_accepts_the_synthesize_run_directory(tmp_path: Path) -> None:
    _, x, _, _ = filled(tmp_path / "run" / "transfer_set")  # the layout `dfkd synthesize --out run` writes
    (tmp_path / "run" / "results.json").write_text("{}")
    via_run, direct = TransferSet.open(tmp_path / "run"), TransferSet.open(tmp_path / "run" / "transfer_set")
    assert via_run.path == direct.path == tmp_path / "run" / "transfer_set"
    assert torch.equal(via_run.load().images, direct.load().images) and len(via_run) == len(x)
    assert locate(tmp_path / "run") == locate(tmp_path / "run" / "transfer_set")


@pytest.mark.parametrize("layout", ["empty", "file", "missing", "nested-too-deep"])
def test_neither_a_set_nor_a_run_directory_is_a_one_line_error(tmp_path: Path, layout: str) -> None:
    target = tmp_path / "target"
    if layout == "empty":
        target.mkdir()
    elif layout == "file":
        target.write_text("x")
    elif layout == "nested-too-deep":
        filled(target / "runs" / "run" / "transfer_set")
    with pytest.raises(NotATransferSet) as err:
        TransferSet.open(target)
    assert isinstance(err.value, DatasetError) and err.value.path == str(target)
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_append_validation(tmp_path: Path) -> None:
    ts = make(tmp_path / "set")
    x, lg, y = batch(3)
    cases = [
        ((torch.rand(3, 1, 5, 6),), "shape"),
        ((torch.rand(3, 6, 6),), "shape"),
        ((x * 2 - 0.5,), r"\[0, 1\]"),
        ((x.masked_fill(x > 0.9, float("nan")),), "NaN"),
        (((x * 255).to(torch.uint8),), "floats"),
        ((x, torch.randn(3, 5)), r"teacher_logits have shape \(3, 5\), expected \(3, 4\)"),
        ((x, torch.randn(2, 4)), "teacher_logits have shape"),
        ((x, torch.full((3, 4), float("inf"))), "infinite"),
        ((x, None, torch.tensor([0, 1, 4])), "labels must lie"),
        ((x, None, torch.zeros(3)), "integer"),
    ]
    for args, message in cases:
        with pytest.raises(DatasetError, match=message):
            ts.append(*args)
    assert ts.pending == 0 and ts.meta["has_logits"] is None
    ts.append(x, lg)
    with pytest.raises(DatasetError, match="with logits"):
        ts.append(x)
    with pytest.raises(DatasetError, match="without labels"):
        ts.append(x, lg, y)


def test_create_refuses_non_empty_directory(tmp_path: Path) -> None:
    filled(tmp_path / "set")
    with pytest.raises(DfkdError, match="not empty.*TransferSet.open"):
        make(tmp_path / "set")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(DfkdError, match="not empty"):
        make(tmp_path / "other")
    with pytest.raises(DfkdError, match="dtype"):
        TransferSet.create(tmp_path / "new", INFO, "n", {}, "fp", 0, dtype="float32")
    (tmp_path / "empty").mkdir()
    assert len(make(tmp_path / "empty")) == 0


def test_reopen_and_append_continues(tmp_path: Path) -> None:
    ts, x, lg, y = filled(tmp_path / "set")  # shards 7, 7, 4
    again = TransferSet.open(tmp_path / "set")
    x2, lg2, y2 = batch(9, seed=7)
    with again:
        again.append(x2, lg2, y2)
    assert len(again) == 27
    back = TransferSet.open(tmp_path / "set")
    assert len(back) == 27 and [s["count"] for s in back.meta["shards"]] == [7, 7, 4, 7, 2]
    assert back.meta["seed"] == 3 and back.meta["synthesizer"] == "noise"
    assert torch.equal(back.load().labels, torch.cat([y, y2]))
    assert torch.equal(back.load_logits(), torch.cat([lg, lg2]))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("info", [INFO, RGB])
def test_preview_has_one_row_per_class_present(tmp_path: Path, info: DatasetInfo) -> None:
    ts = make(tmp_path / "set", info=info, shard_size=4)
    x = torch.rand(10, *info.shape)
    labels = torch.tensor([0, 2, 0, 2, 2, 0, 2, 2, 2, 2]) % info.num_classes  # two classes present
    ts.append(x, None, labels)
    ts.flush()
    out = ts.write_preview(per_class=3)
    assert out == tmp_path / "set" / "preview.png"
    width, height = png_size(out)
    assert height == 2 * PREVIEW_CELL_PX
    assert width > 3 * PREVIEW_CELL_PX
    TransferSet.open(tmp_path / "set")  # the preview does not disturb the set
    custom = ts.subset(1).write_preview(tmp_path / "one.png")
    assert png_size(custom)[1] == PREVIEW_CELL_PX
