"""Exploration tools behind ``results/datafree-lenet5bn/closing-the-gap.md``: variants of a
transfer set, each written as a new transfer set that ``dfkd distill --source transfer:DIR`` reads.

    # re-generate from a fitted ``fast`` state with other round settings (e.g. inner_steps=10), or
    # against a proxy student with Fast-DFKD's decision-adversarial term (adv_weight=1.1)
    python scripts/explore_transfer_sets.py regenerate --teacher T.pt --run SET_RUN \
        --n 10240 --keep SET_RUN/transfer_set:10000 --proxy STUDENT/model.pt --option adv_weight=1.1 --out DIR
    # first N images of several sets, concatenated
    python scripts/explore_transfer_sets.py combine --out DIR SET_A:10000 SET_B:10000
    # at most PER images of each teacher-argmax class, drawn from several sets
    python scripts/explore_transfer_sets.py balance --per 2000 --out DIR SET_A SET_B

All three keep the stored teacher logits (``regenerate`` labels its new images with the teacher,
on exactly the stored uint8 pixels, like ``dfkd synthesize``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from datafree_kd.checkpoint import load_model, read_checkpoint
from datafree_kd.config import parse_overrides
from datafree_kd.errors import ConfigError, DfkdError
from datafree_kd.runtime import resolve_device
from datafree_kd.synthesis import batch_seed, label_stored_pixels
from datafree_kd.teacher import load_teacher
from datafree_kd.transfer_set import TransferSet
from generators.fast import FastMeta


def _sized(spec: str) -> tuple[TransferSet, int]:
    """``PATH:N`` -> (opened set, N); ``PATH`` -> (set, its length)."""
    path, _, n = spec.rpartition(":")
    if not n.isdigit():
        path, n = spec, ""
    source = TransferSet.open(path)
    return source, len(source.subset(int(n))) if n else len(source)  # subset checks N against the set


def _one_teacher(sets: list[TransferSet], fingerprint: str | None = None) -> str:
    """The teacher fingerprint all ``sets`` share: logits from different teachers must not mix."""
    prints = {s.meta["teacher_fingerprint"] for s in sets} | ({fingerprint} if fingerprint else set())
    if len(prints) != 1:
        raise ConfigError(f"the sets were labelled by different teachers (fingerprints {sorted(prints)})")
    return prints.pop()


def _new_set(out: str, like: TransferSet, how: str, config: dict, fingerprint: str) -> TransferSet:
    return TransferSet.create(out, like.info, how, config, fingerprint, 0, shard_size=5120)


def _append(dst: TransferSet, images: torch.Tensor, logits: torch.Tensor) -> None:
    dst.append(images.float().div(255) if images.dtype == torch.uint8 else images, logits, None)


def combine(args: argparse.Namespace) -> TransferSet:
    parts = [_sized(spec) for spec in args.sets]
    fingerprint = _one_teacher([source for source, _ in parts])
    dst = _new_set(args.out, parts[0][0], "combined", {"parts": args.sets}, fingerprint)
    for source, n in parts:
        _append(dst, source.load(n).images, source.load_logits(n))
    return dst


def balance(args: argparse.Namespace) -> TransferSet:
    if args.per < 1:
        raise ConfigError(f"--per must be >= 1, got {args.per}")
    sources = [_sized(spec) for spec in args.sets]
    fingerprint = _one_teacher([s for s, _ in sources])
    images = torch.cat([s.load(n).images for s, n in sources])
    logits = torch.cat([s.load_logits(n) for s, n in sources])
    labels = logits.argmax(1)
    keep = torch.cat([torch.nonzero(labels == c).flatten()[: args.per] for c in range(logits.shape[1])])
    keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))]
    dst = _new_set(args.out, sources[0][0], "balanced", {"sets": args.sets, "per_class": args.per}, fingerprint)
    _append(dst, images[keep], logits[keep])
    return dst


def regenerate(args: argparse.Namespace) -> TransferSet:
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    device = resolve_device("auto")
    teacher = load_teacher(args.teacher)
    teacher.model.to(device)
    proxy = load_model(args.proxy).model.eval().requires_grad_(False).to(device) if args.proxy else None
    run = Path(args.run)
    fitted = TransferSet.open(run / "transfer_set")
    if fitted.meta["synthesizer"] != "fast" or not (run / "synthesizer.pt").is_file():
        raise ConfigError("not the output directory of a finished `fast` synthesis", run)
    kept, n_kept = _sized(args.keep) if args.keep else (fitted, 0)
    fingerprint = _one_teacher([fitted, kept], teacher.fingerprint)
    # the fitted generator's shape comes from the run's own options; --option changes the rounds
    options = {**fitted.meta["synthesizer_config"].get("resolved_options", {}), **parse_overrides(args.option)}
    synthesizer = FastMeta(teacher.info, student=proxy, **options)
    synthesizer.load_state_dict(read_checkpoint(run / "synthesizer.pt"))
    # the adversarial term waits for `warmup` meta rounds; a fitted state has had fit_rounds of them
    synthesizer.rounds.clamp_(min=synthesizer.settings.warmup)
    config = {"run": args.run, "options": options, "proxy": args.proxy, "keep": args.keep}
    dst = _new_set(args.out, fitted, "fast-variant", config, fingerprint)
    if n_kept:
        _append(dst, kept.load(n_kept).images, kept.load_logits(n_kept))
    made, index = 0, 0
    while made < args.n:
        generator = torch.Generator().manual_seed(batch_seed(args.seed, index))
        batch = synthesizer.generate(teacher.model, min(256, args.n - made), generator, device)
        images, logits = label_stored_pixels(teacher, batch, "uint8", device)
        dst.append(images, logits, None)
        made, index = made + len(images), index + 1
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("regenerate", help="new images from a fitted fast state")
    p.add_argument("--teacher", required=True)
    p.add_argument("--run", required=True, help="output directory of a finished `fast` synthesis")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keep", help="SET:N: start the new set with the first N images of SET")
    p.add_argument("--proxy", help="student checkpoint for the decision-adversarial term")
    p.add_argument("--option", action="append", default=[], help="fast option KEY=VALUE (repeatable)")
    p.add_argument("--seed", type=int, default=12345, help="base of the per-batch seeds")
    p.set_defaults(action=regenerate)
    p = sub.add_parser("combine", help="concatenate the first N images of several sets")
    p.add_argument("sets", nargs="+", help="SET or SET:N")
    p.set_defaults(action=combine)
    p = sub.add_parser("balance", help="at most PER images per teacher-argmax class")
    p.add_argument("--per", type=int, required=True)
    p.add_argument("sets", nargs="+", help="SET or SET:N")
    p.set_defaults(action=balance)
    for name in ("regenerate", "combine", "balance"):
        sub.choices[name].add_argument("--out", required=True)
    args = parser.parse_args()
    began = time.process_time()
    try:
        dst = args.action(args)
        dst.flush()
    except DfkdError as exc:
        sys.exit(f"explore_transfer_sets: error: {exc}")
    print(f"{len(dst)} images in {Path(args.out)}; {(time.process_time() - began) / 60:.2f} CPU min")


if __name__ == "__main__":
    main()
