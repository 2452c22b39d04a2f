"""Usage: python s38_dead_leaves.py TEACHER.pt OUT_SET N [SEED] [CANDIDATES] [SYMMETRIC]
Probe (session 38, exploration): a transfer set of procedural "dead leaves" images (Baradad et al.
2021; Nayak et al. 2021 for arbitrary transfer sets): K random rectangles and ellipses, each a flat
grey level, stacked on a black ground, soft-edged. Nothing is learned and no real image is read; the
teacher labels CANDIDATES of them and the set keeps N class-balanced ones (per teacher argmax, the
most confident first; a class the teacher rarely picks is filled with the images ranking it
highest). Why: the plain students' class holes (session 31) sit where the DAFL blobs leave the
teacher's function on real garments undetermined; silhouettes built from large shapes ask the
teacher about structure instead of pixel patterns. SYMMETRIC (default 0): the share of candidates
whose right half mirrors their left (a bilateral-symmetry prior: a bar left of the middle becomes a
pair of legs, a slanted edge a trapezoid). One torch thread."""
import sys

import torch

torch.set_num_threads(1)
if len(sys.argv) not in (4, 5, 6, 7):
    sys.exit(__doc__)
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import TransferSet


def dead_leaves(n: int, size: int, g: torch.Generator, max_shapes: int = 6, symmetric: float = 0.0) -> torch.Tensor:
    """n images (n, 1, size, size) in [0, 1]: up to max_shapes occluding shapes, later ones on top;
    a share ``symmetric`` of them mirrored about the vertical midline (left half onto the right)."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    img = torch.zeros(n, size, size)
    shapes = torch.randint(1, max_shapes + 1, (n,), generator=g)
    c = (size - 1) / 2
    for k in range(max_shapes):
        active = (shapes > k).float().view(n, 1, 1)
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, 1, generator=g)
        cx, cy = c + size / 7 * torch.randn(n, 1, 1, generator=g), c + size / 7 * torch.randn(n, 1, 1, generator=g)
        a, b = u(1.5, size * 0.45), u(1.5, size * 0.45)
        th = u(0, torch.pi)
        dx, dy = xs - cx, ys - cy
        pu, pv = dx * th.cos() + dy * th.sin(), -dx * th.sin() + dy * th.cos()
        ellipse = (torch.rand(n, 1, 1, generator=g) < 0.5).float()
        d = ellipse * ((pu / a) ** 2 + (pv / b) ** 2).sqrt() + (1 - ellipse) * torch.maximum(pu.abs() / a, pv.abs() / b)
        mask = ((1 - d) * torch.minimum(a, b) + 0.5).clamp(0, 1) * active  # about a one-pixel ramp
        img = img * (1 - mask) + u(0.1, 1.0) * mask
    mirrored = torch.cat([img[:, :, : size // 2], img[:, :, : (size + 1) // 2].flip(-1)], dim=2)
    sym = (torch.rand(n, 1, 1, generator=g) < symmetric) if symmetric > 0 else torch.zeros(n, 1, 1, dtype=torch.bool)
    return torch.where(sym, mirrored, img).unsqueeze(1)


teacher_path, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
candidates = int(sys.argv[5]) if len(sys.argv) > 5 else 10 * n
symmetric = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
loaded = load_model(teacher_path)
teacher, info = loaded.model.eval(), loaded.info
g = torch.Generator().manual_seed(seed)
images, logits = [], []
with torch.inference_mode():
    for start in range(0, candidates, 5000):
        x = dead_leaves(min(5000, candidates - start), info.image_size, g, symmetric=symmetric)
        images.append(x)
        logits.append(teacher(x).float())
images, logits = torch.cat(images), torch.cat(logits)
probs = logits.softmax(1)
top = probs.argmax(1)
classes = info.num_classes
print("candidates per teacher class:", torch.bincount(top, minlength=classes).tolist())
per_class = n // classes
chosen: list[torch.Tensor] = []
taken = torch.zeros(len(images), dtype=torch.bool)
for k in range(classes):
    own = (top == k).nonzero().flatten()
    own = own[probs[own, k].argsort(descending=True)][:per_class]
    if len(own) < per_class:  # fill from the images ranking class k highest, not yet taken
        rest = (~taken & (top != k)).nonzero().flatten()
        rest = rest[probs[rest, k].argsort(descending=True)][: per_class - len(own)]
        own = torch.cat([own, rest])
    taken[own] = True
    chosen.append(own)
keep = torch.cat(chosen)
keep = keep[torch.randperm(len(keep), generator=g)]
kept = probs[keep]
print("kept per teacher class:", torch.bincount(kept.argmax(1), minlength=classes).tolist(),
      "mean confidence", round(float(kept.max(1).values.mean()), 3))
ts = TransferSet.create(out, info, "dead-leaves-probe", {"candidates": candidates, "max_shapes": 6, "symmetric": symmetric}, "probe", seed)
for start in range(0, len(keep), 1000):
    idx = keep[start:start + 1000]
    ts.append(images[idx], logits[idx])
ts.flush()
print("wrote", out)
