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
from generators.procedural import dead_leaves  # the probe's renderer, moved into the package unchanged


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
        x = dead_leaves(min(5000, candidates - start), info.in_channels, info.image_size, g, symmetric=symmetric)
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
