"""StreamingTransferSource: deterministic, exactly resumable, one pass = every image at most once,
bounded residency, the in-memory/streaming choice by budget, and one-line errors for bad shards."""

from __future__ import annotations

import io
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError, DatasetError
from datafree_kd.sources import TensorSetSource
from datafree_kd.streaming import (
    MIB, StreamingTransferSource, in_memory_bytes, source_head, source_size, transfer_source, window_for_budget,
)
from datafree_kd.transfer_set import TransferSet

torch.set_num_threads(1)

INFO = DatasetInfo("ids", num_classes=4, in_channels=1, image_size=4, mean=(0.5,), std=(0.25,))
N, SHARD, WINDOW, BATCH = 1000, 64, 3, 32  # 15 full shards + one of 40; 6 windows; 31 batches a pass


def id_set(path: Path, n: int = N, shard_size: int = SHARD, logits: bool = False) -> TransferSet:
    """A set whose image i encodes i in its first two pixels (exact through uint8)."""
    ts = TransferSet.create(path, INFO, "noise", {}, "f" * 16, seed=0, shard_size=shard_size)
    ids = torch.arange(n)
    x = torch.rand(n, *INFO.shape, generator=torch.Generator().manual_seed(1))
    x[:, 0, 0, 0] = (ids % 256).float() / 255
    x[:, 0, 0, 1] = (ids // 256).float() / 255
    ts.append(x, torch.randn(n, 4) if logits else None)
    ts.flush()
    return TransferSet.open(path)


def ids_of(x: torch.Tensor) -> list[int]:
    return ((x[:, 0, 0, 0] * 255).round().long() + 256 * (x[:, 0, 0, 1] * 255).round().long()).tolist()


def draw(source, k: int, g: torch.Generator, batch: int = BATCH) -> list[torch.Tensor]:
    return [source.next_batch(batch, g)[0] for _ in range(k)]


@pytest.fixture
def ids(tmp_path: Path) -> TransferSet:
    return id_set(tmp_path / "set")


def test_batches_are_floats_in_unit_range_with_no_labels(ids: TransferSet) -> None:
    src = StreamingTransferSource(ids, "s", window_shards=WINDOW)
    src.setup(torch.device("cpu"))
    x, y = src.next_batch(BATCH, torch.Generator().manual_seed(0))
    assert y is None and x.dtype == torch.float32 and tuple(x.shape) == (BATCH, *INFO.shape)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert len(src) == src.num_images == N and src.num_windows == 6


def test_same_generator_same_batches_other_seed_other_batches(ids: TransferSet) -> None:
    def run(seed: int) -> list[torch.Tensor]:
        return draw(StreamingTransferSource(ids, window_shards=WINDOW), 70, torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize("window", [1, WINDOW, 16])
def test_one_pass_serves_every_image_at_most_once(ids: TransferSet, window: int) -> None:
    src = StreamingTransferSource(ids, window_shards=window)
    g = torch.Generator().manual_seed(0)
    per_pass = N // BATCH
    passes = []
    for p in range(3):
        served = [i for x in draw(src, per_pass, g) for i in ids_of(x)]
        assert src.passes == p + 1  # the pass ends exactly at len // batch_size batches
        assert len(served) == len(set(served)) == per_pass * BATCH >= N - BATCH
        assert set(served) <= set(range(N))
        passes.append(served)
    assert passes[0] != passes[1] != passes[2]  # reshuffled each pass
    first = [ids_of(x) for x in draw(src, 1, g)]
    assert src.passes == 4 and first


def test_batches_mix_shards_within_a_window(ids: TransferSet) -> None:
    src = StreamingTransferSource(ids, window_shards=WINDOW)
    x, _ = src.next_batch(BATCH, torch.Generator().manual_seed(0))
    assert len({i // SHARD for i in ids_of(x)}) > 1  # not one shard's images in a row


def test_subset_view_streams_only_its_prefix(ids: TransferSet) -> None:
    view = ids.subset(300)  # 4 full shards + 44 of the fifth
    src = StreamingTransferSource(view, window_shards=2)
    assert len(src) == 300 and src.counts == [64, 64, 64, 64, 44]
    served = [i for x in draw(src, 300 // BATCH, torch.Generator().manual_seed(0)) for i in ids_of(x)]
    assert len(set(served)) == len(served) == 288 and max(served) < 300


@pytest.mark.parametrize("k", [0, 1, 5, 6, 13, 30, 31, 32, 45])
def test_resume_serves_the_same_batches(ids: TransferSet, k: int) -> None:
    m = 40  # crosses windows and a pass boundary
    g = torch.Generator().manual_seed(7)
    src = StreamingTransferSource(ids, window_shards=WINDOW)
    draw(src, k, g)
    buffer = io.BytesIO()
    torch.save({"source": src.state_dict(), "generator": g.get_state()}, buffer)
    expected = draw(src, m, g)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # the state is plain data a checkpoint can hold
    g2 = torch.Generator()
    g2.set_state(saved["generator"])
    # a fresh process: the set reopened, and a different budget (the saved window wins)
    resumed = StreamingTransferSource(TransferSet.open(ids.path), memory_budget_mb=0.02)
    resumed.load_state_dict(saved["source"])
    got = draw(resumed, m, g2)
    assert all(torch.equal(p, q) for p, q in zip(expected, got))
    assert resumed.passes == src.passes


def test_resume_refuses_a_foreign_state(ids: TransferSet) -> None:
    memory = TensorSetSource(ids.load(), with_labels=False, description="m")
    memory.setup(torch.device("cpu"))
    memory.next_batch(BATCH, torch.Generator().manual_seed(0))
    src = StreamingTransferSource(ids, window_shards=WINDOW)
    with pytest.raises(ValueError, match="in-memory source"):
        src.load_state_dict(memory.state_dict())
    other = StreamingTransferSource(ids.subset(500), window_shards=WINDOW)
    with pytest.raises(ValueError, match="500 images"):
        src.load_state_dict(other.state_dict())


def test_residency_stays_within_window_plus_one_shard(ids: TransferSet, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[weakref.ref] = []
    real = ids.read_shard

    def watched(index: int, verify: bool = True) -> dict[str, torch.Tensor]:
        # no shard read earlier may still be referenced (by the source or anything else)
        assert all(r() is None for r in reads), "an old shard is still held"
        data = real(index, verify)
        reads.append(weakref.ref(data["images"]))
        return data

    monkeypatch.setattr(ids, "read_shard", watched)
    src = StreamingTransferSource(ids, window_shards=WINDOW)
    g = torch.Generator().manual_seed(0)
    for _ in range(3 * (N // BATCH)):
        src.next_batch(BATCH, g)
        assert src.resident_images() <= WINDOW * SHARD + BATCH
    assert len(reads) == src.shard_reads == 3 * 16  # every shard read once per pass, no more
    assert 0 < src.peak_resident_images <= (WINDOW + 1) * SHARD + BATCH


def test_window_follows_the_budget(ids: TransferSet) -> None:
    shard_bytes = SHARD * (ids.image_bytes + 16)
    assert window_for_budget(ids, 5 * shard_bytes / MIB) == 4  # one shard kept for the read in flight
    assert window_for_budget(ids, 1e-6) == 1
    assert window_for_budget(ids, 1e6) == 16
    assert StreamingTransferSource(ids, memory_budget_mb=5 * shard_bytes / MIB).window_shards == 4


def test_factory_picks_memory_or_stream_by_budget(ids: TransferSet) -> None:
    need = in_memory_bytes(ids) / MIB
    assert need == N * (16 + 16) / MIB
    small = transfer_source(ids, "transfer:x (1000 images)", memory_budget_mb=need * 0.9)
    big = transfer_source(ids, "transfer:x (1000 images)", memory_budget_mb=need)
    assert isinstance(small, StreamingTransferSource) and "streamed" in small.description
    assert isinstance(big, TensorSetSource) and big.description == "transfer:x (1000 images)"
    assert torch.equal(big.data.images, ids.load().images)
    view = transfer_source(ids.subset(100), "d", memory_budget_mb=need * 0.05)
    assert isinstance(view, StreamingTransferSource) and len(view) == 100
    with pytest.raises(ValueError, match="positive"):
        transfer_source(ids, "d", memory_budget_mb=0)


@pytest.mark.parametrize("budget", [1e-3, 1e3])
def test_factory_passes_the_origin_to_either_source(ids: TransferSet, budget: float) -> None:
    origin = {"kind": "transfer", "path": str(ids.path), "synthetic": False}
    src = transfer_source(ids, "d", memory_budget_mb=budget, origin=origin)
    assert src.origin == origin and src.provenance()["path"] == str(ids.path)


def test_size_and_head_work_for_both_kinds(ids: TransferSet) -> None:
    stream = StreamingTransferSource(ids, window_shards=WINDOW)
    memory = transfer_source(ids, "d", memory_budget_mb=1e3)
    for src in (stream, memory):
        assert source_size(src) == N
        head = source_head(src, 100)
        assert torch.equal(head.images, ids.load(100).images)
        assert len(source_head(src, 10**6)) == N  # at most all, like images[:n]
    assert ids_of(stream.head(70).images.float() / 255) == list(range(70))


@pytest.mark.parametrize("damage", ["missing", "altered", "truncated"])
def test_a_bad_shard_mid_run_is_a_one_line_error_naming_it(tmp_path: Path, damage: str) -> None:
    ts = id_set(tmp_path / "set", logits=True)
    src = StreamingTransferSource(ts, window_shards=WINDOW)
    g = torch.Generator().manual_seed(0)
    draw(src, 2, g)  # the first window is read and fine
    for shard in sorted((tmp_path / "set").glob("shard-*.pt")):
        if damage == "missing":
            shard.unlink()
        elif damage == "altered":
            raw = bytearray(shard.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            shard.write_bytes(bytes(raw))
        else:
            shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DatasetError) as info:
        draw(src, N // BATCH, g)
    message = str(info.value)
    assert "\n" not in message and info.value.path and Path(info.value.path).name.startswith("shard-")
    assert {"missing": "shard missing", "altered": "checksum mismatch", "truncated": "truncated"}[damage] in message


def test_training_from_the_stream_matches_training_in_memory(tmp_path: Path) -> None:
    """Same tiny model, same steps: the windowed shuffle learns as well as a full shuffle."""
    info = DatasetInfo("quad", num_classes=4, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    g = torch.Generator().manual_seed(0)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 4
        x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
        for i, c in enumerate(y.tolist()):
            x[i, 0, (c // 2) * 4 : (c // 2) * 4 + 4, (c % 2) * 4 : (c % 2) * 4 + 4] += 0.4
        return x, y

    def teacher(x: torch.Tensor) -> torch.Tensor:  # the labelling rule: the brightest quadrant
        return x.reshape(len(x), 2, 4, 2, 4).sum(dim=(2, 4)).reshape(len(x), 4).argmax(1)

    x, y = make(2048)
    order = torch.argsort(y, stable=True)  # written class by class: the hard case for a local shuffle
    ts = TransferSet.create(tmp_path / "quad", info, "noise", {}, "f" * 16, seed=0, shard_size=128)
    ts.append(x[order])
    ts.flush()
    ts = TransferSet.open(tmp_path / "quad")
    x_test, y_test = make(512)

    def train(src) -> float:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        gen = torch.Generator().manual_seed(1)
        for _ in range(150):
            xb, _ = src.next_batch(32, gen)
            model.zero_grad()
            nn.functional.cross_entropy(model(xb), teacher(xb)).backward()
            with torch.no_grad():  # plain SGD by hand: torch.optim's first use imports dynamo (seconds)
                for p in model.parameters():
                    p -= 0.5 * p.grad
        with torch.no_grad():
            return float((model(x_test).argmax(1) == y_test).float().mean())

    memory = TensorSetSource(ts.load(), with_labels=False, description="m")
    memory.setup(torch.device("cpu"))
    stream = StreamingTransferSource(ts, window_shards=4)
    stream.setup(torch.device("cpu"))
    acc_memory, acc_stream = train(memory), train(stream)
    assert acc_memory > 0.9 and acc_stream > 0.9
    assert abs(acc_memory - acc_stream) < 0.05


def test_the_engine_streams_a_set_over_its_budget_and_resumes_exactly(tmp_path: Path) -> None:
    """``dfkd distill`` on a set larger than ``memory_budget_mb``: streamed (said in the source),
    and a run killed after its first checkpoint then resumed equals one straight run."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from conftest import train_toy_teacher

    from datafree_kd.checkpoint import load_model
    from datafree_kd.synthesis import SynthesizeConfig, run_synthesis

    data, teacher = train_toy_teacher(tmp_path)
    run_synthesis(SynthesizeConfig(teacher=str(teacher), method="random-generator", n=256, batch_size=32,
                                   shard_size=32, preview=False, device="cpu", threads=1), tmp_path / "set")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}

    def distill(out: str, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "datafree_kd.cli", "distill", "--teacher", str(teacher), "--data-root",
                str(data), "--source", f"transfer:{tmp_path / 'set'}", "--steps", "12", "--out", str(tmp_path / out),
                "batch_size=16", "memory_budget_mb=0.08", "checkpoint_every=5", "latency_runs=0", "device=cpu",
                "threads=1", "recipe=none", *extra]
        return subprocess.run(args, env={**env, **({"DFKD_FAULT": fault} if fault else {})}, capture_output=True,
                              text=True)

    assert distill("a").returncode == 0
    straight = json.loads((tmp_path / "a" / "results.json").read_text())
    assert "streamed from disk" in straight["source_provenance"]["description"] and straight["images"] == 256
    assert distill("b", fault="loop.checkpoint:1").returncode == -signal.SIGKILL
    assert distill("b", "--resume").returncode == 0
    resumed = json.loads((tmp_path / "b" / "results.json").read_text())
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    a, b = (load_model(tmp_path / d / "model.pt").model.state_dict() for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_class_balance_draws_every_teacher_class_equally_and_resumes(tmp_path: Path) -> None:
    """A set whose teacher labels are 90 / 9 / 0.9 / 0.1 % of four classes: balanced passes draw each
    class about a quarter of the time, reproducibly, and a resumed source continues the same pass."""
    ts = TransferSet.create(tmp_path / "skewed", INFO, "noise", {}, "f" * 16, seed=0, shard_size=SHARD)
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 9 + [3] * 1)
    ts.append(torch.rand(N, *INFO.shape), torch.nn.functional.one_hot(labels, 4).float() * 5)
    ts.flush()
    skewed = TransferSet.open(tmp_path / "skewed")
    assert torch.equal(skewed.load().labels, labels)
    src = transfer_source(skewed, "s", class_balance=True)
    src.setup(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    first = draw(src, 20, g)
    share = torch.bincount(labels[src.order], minlength=4).float() / N
    assert ((share - 0.25).abs() < 0.06).all(), share
    plain = transfer_source(skewed, "s")
    plain.setup(torch.device("cpu"))
    plain.next_batch(BATCH, torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(labels[plain.order], minlength=4), torch.bincount(labels, minlength=4))
    again = transfer_source(skewed, "s", class_balance=True)
    again.setup(torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(first, draw(again, 20, torch.Generator().manual_seed(0))))
    state, g_state = src.state_dict(), g.get_state()
    later = draw(src, 5, g)
    resumed = transfer_source(skewed, "s", class_balance=True)
    resumed.setup(torch.device("cpu"))
    resumed.load_state_dict(state)
    g.set_state(g_state)
    assert all(torch.equal(a, b) for a, b in zip(later, draw(resumed, 5, g)))


def test_class_balance_refuses_a_set_that_would_stream(ids: TransferSet) -> None:
    with pytest.raises(ConfigError, match="class_balance needs the set in memory"):
        transfer_source(ids, "s", memory_budget_mb=in_memory_bytes(ids) / MIB / 2, class_balance=True)
