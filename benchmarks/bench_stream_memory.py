"""Peak memory of training from a transfer set: streamed from disk vs loaded into memory.

    OMP_NUM_THREADS=1 python benchmarks/bench_stream_memory.py            # 20k, 100k, 300k, 1M
    OMP_NUM_THREADS=1 python benchmarks/bench_stream_memory.py --sizes 20000,100000 --batches 500

Writes one set of max(sizes) random 28x28x1 uint8 images (no logits, ``--shard-size`` per shard)
under a temporary directory -- about 0.8 GB for 1M images -- and reads the smaller sizes as
``subset(n)`` views of it (the engine's ``transfer_size`` path; a view reads only its shards).
Each measurement runs in a fresh child process, so ``ru_maxrss`` is that size's own peak: the
child opens the set, builds the source (``StreamingTransferSource`` with ``--budget-mb``, or the
in-memory ``TensorSetSource``), draws ``--batches`` batches of ``--batch`` with a seeded generator
and reports its peak RSS (``ru_maxrss``: importing a CUDA build of torch alone maps ~0.5 GB, so
this figure is mostly torch), the growth of the peak over the source's lifetime (VmHWM reset
through ``/proc/self/clear_refs`` just before the source is built, minus the RSS then) and the
batches per second (including, for the stream, every shard read and its sha256 check; for
memory, excluding the initial ``load``). The temporary set is deleted at the end (``--keep``
keeps it). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = (1, 28, 28)


def build(path: Path, n: int, shard_size: int) -> float:
    import torch

    from datafree_kd.data.info import DatasetInfo
    from datafree_kd.transfer_set import TransferSet

    info = DatasetInfo("bench", num_classes=10, in_channels=1, image_size=28, mean=(0.5,), std=(0.25,))
    start = time.perf_counter()
    ts = TransferSet.create(path, info, "noise", {"bench": True}, "0" * 16, seed=0, shard_size=shard_size)
    g = torch.Generator().manual_seed(0)
    for at in range(0, n, shard_size):
        m = min(shard_size, n - at)
        ts.append(torch.randint(0, 256, (m, *SHAPE), dtype=torch.uint8, generator=g).float().div_(255.0))
    ts.flush()
    return time.perf_counter() - start


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` figure (VmRSS: resident now; VmHWM: its high-water mark) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak counts only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    import torch

    from datafree_kd.sources import TensorSetSource
    from datafree_kd.streaming import StreamingTransferSource
    from datafree_kd.transfer_set import TransferSet

    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ts = TransferSet.open(args.path, verify=False).subset(args.n)
    reset = _reset_peak()
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    extra = {}
    if args.mode == "stream":
        source = StreamingTransferSource(ts, "bench", memory_budget_mb=args.budget_mb)
        extra["window_shards"] = source.window_shards
    else:
        source = TensorSetSource(ts.load(), with_labels=False, description="bench")
    source.setup(torch.device("cpu"))
    setup_s = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    total = 0.0
    start = time.perf_counter()
    for _ in range(args.batches):
        x, _ = source.next_batch(args.batch, g)
        total += float(x[0, 0, 0, 0])  # touch the batch
    elapsed = time.perf_counter() - start
    if args.mode == "stream":
        extra.update(shard_reads=source.shard_reads, peak_resident_images=source.peak_resident_images)
    print(json.dumps({
        "mode": args.mode, "n": args.n, "batches": args.batches, "batch": args.batch,
        "rss_before_mb": before / 1024, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "growth_mb": (_status_mb("VmHWM") - base) if reset else float("nan"),
        "setup_s": setup_s, "batches_per_s": args.batches / elapsed, "passes": source.passes, **extra,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000,300000,1000000")
    parser.add_argument("--memory-sizes", default="20000,100000", help="sizes also run with the in-memory source")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=10000)
    parser.add_argument("--budget-mb", type=float, default=64.0, help="the streaming source's memory budget")
    parser.add_argument("--dir", default=None, help="where to write the temporary set (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    memory_sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    root = Path(tempfile.mkdtemp(prefix="dfkd-bench-stream-", dir=args.dir))
    rows = []
    try:
        path = root / "set"
        n_max = max(sizes + memory_sizes)
        seconds = build(path, n_max, args.shard_size)
        disk_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(f"wrote {n_max} images ({disk_mb:.0f} MB, shards of {args.shard_size}) in {seconds:.1f} s under {root}")
        runs = [("stream", n) for n in sizes] + [("memory", n) for n in memory_sizes]
        for mode, n in runs:
            cmd = [sys.executable, __file__, "--child", "--mode", mode, "--path", str(path), "--n", str(n),
                   "--batches", str(args.batches), "--batch", str(args.batch), "--budget-mb", str(args.budget_mb)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("| source | images | set (decoded) | window | peak RSS (ru_maxrss) | peak RSS growth over the "
          "source's lifetime | batches/s | shard reads |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        window = f"{r['window_shards']} shards" if r["mode"] == "stream" else "whole set"
        source = f"stream, budget {args.budget_mb:g} MiB" if r["mode"] == "stream" else "in memory"
        print(f"| {source} | {r['n']:,} | {r['n'] * 784 / 1e6:.0f} MB | {window} | {r['peak_rss_mb']:.0f} MB "
              f"| +{r['growth_mb']:.0f} MB | {r['batches_per_s']:.0f} | {r.get('shard_reads', '-')} |")
    print()
    print(f"RSS of the child before building the source (python, torch, the open set): "
          f"{min(r['rss_before_mb'] for r in rows):.0f}-{max(r['rss_before_mb'] for r in rows):.0f} MB")


if __name__ == "__main__":
    main()
