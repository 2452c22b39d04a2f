"""Train from a transfer set larger than memory: stream it from disk, shard by shard, shuffled.

``StreamingTransferSource`` is the disk-backed twin of ``sources.TensorSetSource``: the same
``next_batch(batch_size, generator) -> (images float [0,1] on the device, None)`` contract, the
same "drop the ragged tail, then start a new pass" rule (so ``len(source) // batch_size`` steps
are one epoch), and an exact resume through ``state_dict``. It holds at most a *window* of
shards in memory (sized from a memory budget) plus the one shard being read.

The shuffle, per pass:

1. one 62-bit *pass seed* is drawn from the run's generator (the only draw it makes, so the
   order is a function of the run seed and nothing else);
2. the pass seed permutes the shards; consecutive groups of ``window_shards`` shards of that
   permutation are the pass's windows;
3. each window's images -- plus the fewer than ``batch_size`` images the previous window had
   left over (the *carry*) -- are permuted together (a seed derived from the pass seed and the
   window number) and served ``batch_size`` at a time; what is left over is carried on. At the
   end of the pass the last carry (``len % batch_size`` images) is dropped, as TensorSetSource
   drops its ragged tail.

So every image is served at most once per pass, exactly ``len // batch_size`` batches make a
pass, and a batch mixes images from ``window_shards`` random shards (with the default budget
that is hundreds of shards; the set streams only when it does not fit the budget at all).

The position is (passes, pass seed, window number, carry ids, cursor): a few integers and fewer
than ``batch_size`` image ids, so a checkpoint stays small however large the set is. A resumed
source rebuilds the window from disk (the carry is re-read from its shards by id) and serves the
same batches as an uninterrupted one.

Every shard is checked again when it is read (present, the size meta.json records, the same
sha256), so a shard removed or altered during a run stops it with a one-line ``DatasetError``
naming the shard (DESIGN rule 9).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from typing import Any

import torch

from .data.memory import ImageTensors
from .errors import ConfigError
from .sources import BatchSource, TensorSetSource
from .transfer_set import DTYPES, TransferSet

MIB = 1 << 20
#: Suggested default for the engine's ``memory_budget_mb`` knob: sets whose decoded size fits
#: are loaded into memory (fastest), larger ones stream.
DEFAULT_MEMORY_BUDGET_MB = 2048.0
#: Per-image bookkeeping of a window besides the pixels: its global id and its place in the
#: window's permutation (two int64).
_INDEX_BYTES = 16
#: Per-image bookkeeping of the in-memory source besides the pixels: the int64 label ``load``
#: keeps (counted in ``decoded_bytes``) and the int64 permutation of a pass.
_IN_MEMORY_EXTRA = 8
STATE_FORMAT = "datafree_kd.streaming_transfer_source"


def in_memory_bytes(transfer: TransferSet) -> int:
    """What ``TensorSetSource(transfer.load())`` holds: images, labels and a pass permutation."""
    return transfer.decoded_bytes() + _IN_MEMORY_EXTRA * len(transfer)


def window_for_budget(transfer: TransferSet, memory_budget_mb: float) -> int:
    """How many shards a window may hold so that the window plus the one shard being read stay
    within ``memory_budget_mb`` MiB (at least 1, at most every shard of the set)."""
    counts = transfer.shard_counts()
    if not counts:
        return 1
    shard_bytes = max(counts) * (transfer.image_bytes + _INDEX_BYTES)
    fit = int(float(memory_budget_mb) * MIB // shard_bytes) - 1  # one shard is reserved for the read
    return max(1, min(len(counts), fit))


def _window_seed(pass_seed: int, window: int) -> int:
    digest = hashlib.sha256(f"{pass_seed}:{window}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class StreamingTransferSource(BatchSource):
    """Batches from a ``TransferSet`` (or a ``subset(n)`` view) read from disk, shuffled within
    windows of ``window_shards`` shards (see the module doc). ``window_shards`` defaults to what
    ``memory_budget_mb`` allows; labels are None (synthetic data)."""

    def __init__(self, transfer: TransferSet, description: str = "",
                 memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, window_shards: int | None = None,
                 origin: dict[str, Any] | None = None) -> None:
        if not float(memory_budget_mb) > 0:
            raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb!r}")
        counts = transfer.shard_counts()
        if sum(counts) == 0:
            raise ValueError("cannot train from an empty set")
        if window_shards is not None and (isinstance(window_shards, bool) or not isinstance(window_shards, int)
                                          or window_shards < 1):
            raise ValueError(f"window_shards must be a positive integer, got {window_shards!r}")
        self.transfer = transfer
        self.counts = counts
        self.offsets = [0]
        for c in counts[:-1]:
            self.offsets.append(self.offsets[-1] + c)
        self.num_images = sum(counts)
        self.memory_budget_mb = float(memory_budget_mb)
        self.window_shards = min(len(counts), window_shards or window_for_budget(transfer, memory_budget_mb))
        self.description = description or f"stream:{transfer.path} ({self.num_images} images)"
        self.origin = dict(origin or {})  # merged into provenance(), as for TensorSetSource
        self.device = torch.device("cpu")
        self._shape = tuple(transfer.info.shape)
        self._dtype = DTYPES[transfer.dtype]
        # the position (all a resume needs)
        self.passes = 0
        self._pass_seed: int | None = None
        self._window = 0
        self._carry = torch.empty(0, dtype=torch.long)  # ids carried into the current window
        self._cursor = 0
        # the resident window, rebuilt lazily from the position
        self._images: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None
        self._order: torch.Tensor | None = None
        self._shard_order: torch.Tensor | None = None
        self._shard_order_seed: int | None = None
        # instrumentation (for tests and benchmarks; never part of the state)
        self.shard_reads = 0
        self.peak_resident_images = 0
        self._live: list[weakref.ref] = []

    # ------------------------------------------------------------------ description

    def __len__(self) -> int:
        return self.num_images

    @property
    def num_shards(self) -> int:
        return len(self.counts)

    @property
    def num_windows(self) -> int:
        return math.ceil(self.num_shards / self.window_shards)

    def window_bytes(self) -> int:
        """Upper bound on what a window holds (pixels and index bookkeeping), carry excluded."""
        return self.window_shards * max(self.counts) * (self.transfer.image_bytes + _INDEX_BYTES)

    def resident_images(self) -> int:
        """Images held right now: the window buffer plus any decoded shard still alive."""
        held = 0 if self._images is None else len(self._images)
        return held + sum(len(t) for t in (r() for r in self._live) if t is not None)

    def head(self, n: int) -> ImageTensors:
        """The first ``n`` images of the set in file order (at most all of them), in their stored
        dtype, as ``TensorSetSource.data.images[:n]`` gives them; reads only the first shards."""
        return self.transfer.load(max(0, min(int(n), self.num_images)))

    # ------------------------------------------------------------------ batches

    def next_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > self.num_images:
            raise ValueError(f"batch_size {batch_size} exceeds the {self.num_images} images of the source")
        while True:
            if self._pass_seed is None:
                self._start_pass(generator)
            if self._order is None:
                self._build_window()
            assert self._order is not None and self._images is not None and self._ids is not None
            if self._cursor + batch_size <= len(self._order):
                break
            if self._window + 1 < self.num_windows:  # carry the leftover into the next window
                rest = self._order[self._cursor:]
                carry_ids, carry_images = self._ids[rest], self._images[rest]
                del rest
                self._drop_window()  # the old window goes before the next one is read
                self._window += 1
                self._carry, self._cursor = carry_ids, 0
                self._build_window(carry_images)
                del carry_images
            else:  # end of the pass: drop the ragged tail, as TensorSetSource does
                self._pass_seed = None
        idx = self._order[self._cursor : self._cursor + batch_size]
        self._cursor += batch_size
        x = self._images[idx].to(self.device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return x, None

    def _start_pass(self, generator: torch.Generator) -> None:
        self._drop_window()
        self._pass_seed = int(torch.randint(0, 1 << 62, (1,), generator=generator).item())
        self._window, self._cursor = 0, 0
        self._carry = torch.empty(0, dtype=torch.long)
        self.passes += 1

    def _drop_window(self) -> None:
        self._images = self._ids = self._order = None

    def _shards_of_window(self) -> list[int]:
        assert self._pass_seed is not None
        if self._shard_order is None or self._shard_order_seed != self._pass_seed:
            g = torch.Generator().manual_seed(self._pass_seed)
            self._shard_order = torch.randperm(self.num_shards, generator=g)
            self._shard_order_seed = self._pass_seed
        w = self.window_shards
        return self._shard_order[self._window * w : (self._window + 1) * w].tolist()

    def _read(self, shard: int) -> torch.Tensor:
        """Shard ``shard``'s images, verified on disk; labels and logits are let go at once."""
        images = self.transfer.read_shard(shard)["images"]
        self.shard_reads += 1
        self._live = [r for r in self._live if r() is not None]
        self._live.append(weakref.ref(images))
        self.peak_resident_images = max(self.peak_resident_images, self.resident_images())
        return images

    def _build_window(self, carry_images: torch.Tensor | None = None) -> None:
        """Load the current window (carry first, then its shards) and permute it."""
        self._drop_window()
        shards = self._shards_of_window()
        k = len(self._carry)
        total = k + sum(self.counts[s] for s in shards)
        images = torch.empty((total, *self._shape), dtype=self._dtype)
        ids = torch.empty(total, dtype=torch.long)
        if k:
            images[:k] = carry_images if carry_images is not None else self._gather(self._carry)
            ids[:k] = self._carry
        del carry_images
        self._images = images  # counted as resident while the shards are read into it
        at = k
        for s in shards:
            part = self._read(s)
            m = len(part)
            images[at : at + m] = part
            ids[at : at + m] = torch.arange(self.offsets[s], self.offsets[s] + m)
            at += m
            del part
        self._ids = ids
        self._order = torch.randperm(total, generator=torch.Generator().manual_seed(
            _window_seed(self._pass_seed, self._window)))  # type: ignore[arg-type]

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        """The images with these global ids, read back from their shards one at a time (resume)."""
        out = torch.empty((len(ids), *self._shape), dtype=self._dtype)
        starts = torch.tensor(self.offsets, dtype=torch.long)
        which = torch.searchsorted(starts, ids, right=True) - 1
        for shard in torch.unique(which).tolist():
            pos = (which == shard).nonzero().flatten()
            part = self._read(shard)
            out[pos] = part[ids[pos] - self.offsets[shard]]
            del part
        return out

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "num_images": self.num_images, "num_shards": self.num_shards,
            "window_shards": self.window_shards, "passes": self.passes,
            "pass_seed": -1 if self._pass_seed is None else self._pass_seed,
            "window": self._window, "carry": self._carry.clone(), "cursor": self._cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            what = "the in-memory source" if isinstance(state, dict) and "order" in state else "another source"
            raise ValueError(f"this source state was written by {what}, not the streaming one (was "
                             f"memory_budget_mb changed?)")
        if (int(state["num_images"]), int(state["num_shards"])) != (self.num_images, self.num_shards):
            raise ValueError(f"source state is for {state['num_images']} images in {state['num_shards']} shards; "
                             f"this set has {self.num_images} in {self.num_shards}")
        window_shards = int(state["window_shards"])
        if window_shards < 1:
            raise ValueError(f"source state has an invalid window_shards {window_shards}")
        self._drop_window()
        self.window_shards = min(self.num_shards, window_shards)  # the saved one: the same batches
        self.passes = int(state["passes"])
        seed = int(state["pass_seed"])
        self._pass_seed = None if seed < 0 else seed
        self._window, self._cursor = int(state["window"]), int(state["cursor"])
        self._carry = torch.as_tensor(state["carry"], dtype=torch.long).clone()
        if self._pass_seed is not None and not 0 <= self._window < self.num_windows:
            raise ValueError(f"source state window {self._window} is out of range")


def transfer_source(transfer: TransferSet, description: str,
                    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                    origin: dict[str, Any] | None = None, class_balance: bool = False) -> BatchSource:
    """The source for a transfer set (or ``subset`` view): in memory (``TensorSetSource``, the
    fastest) when its decoded size fits ``memory_budget_mb`` MiB, else streamed from disk.
    ``origin`` (provenance facts) is handed to either source; ``class_balance`` (in memory only)
    draws every teacher-labelled class equally often."""
    if not float(memory_budget_mb) > 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb!r}")
    if in_memory_bytes(transfer) <= float(memory_budget_mb) * MIB:
        extra = {} if origin is None else {"origin": origin}
        return TensorSetSource(transfer.load(), with_labels=False, description=description,
                               class_balance=class_balance, **extra)
    if class_balance:
        raise ConfigError(f"class_balance needs the set in memory; {transfer.path} would stream from disk "
                          f"(raise memory_budget_mb above {in_memory_bytes(transfer) / MIB:.0f})")
    source = StreamingTransferSource(transfer, description, memory_budget_mb, origin=origin)
    source.description = (f"{description} [streamed from disk: windows of {source.window_shards} of "
                          f"{source.num_shards} shards, budget {memory_budget_mb:g} MiB]")
    return source


def source_size(source: BatchSource) -> int | None:
    """Images of a fixed-set source (in memory or streamed); None for an online generator."""
    data = getattr(source, "data", None)
    if data is not None:
        return len(data)
    n = getattr(source, "num_images", None)
    return None if n is None else int(n)


def source_head(source: BatchSource, n: int) -> ImageTensors | None:
    """The first ``n`` images (at most all) of a fixed-set source; None for an online generator."""
    data = getattr(source, "data", None)
    if data is not None:
        n = max(0, min(int(n), len(data)))
        return ImageTensors(data.images[:n], data.labels[:n], data.info)
    if isinstance(source, StreamingTransferSource):
        return source.head(n)
    return None


__all__ = ["DEFAULT_MEMORY_BUDGET_MB", "StreamingTransferSource", "in_memory_bytes", "source_head", "source_size",
           "transfer_source", "window_for_budget"]
