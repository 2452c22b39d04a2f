"""Probe: does the choice of conv1 units kept when slicing matter, and does a data-free criterion
(agreement with the teacher on held-out synthetic images) predict val accuracy?"""
import itertools, sys, copy
import numpy as np, torch, torch.nn.functional as F
from scipy.stats import spearmanr
from datafree_kd.teacher import load_teacher
from datafree_kd.models import create_model, slicing
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.registry import load_dataset

torch.set_num_threads(1)
teacher_path, set_path = sys.argv[1], sys.argv[2]
loaded = load_teacher(teacher_path); teacher = loaded.model.eval(); info = loaded.info
data = open_transfer_set(set_path).load(7000); imgs = data.as_float(data.images)
fit, held = imgs[:5000], imgs[5000:7000]
val = load_dataset("fashion-mnist", "val"); vx = val.as_float(val.images)

with torch.no_grad():
    t_held = teacher(held); t_val = teacher(vx)
l1 = slicing._inner(teacher).features[0].weight.abs().flatten(1).sum(1)
l1_pick = tuple(sorted(l1.topk(3).indices.tolist()))
rows = []
def scores(s):
    with torch.no_grad():
        sh = s(held); sv = s(vx)
    agree = (sh.argmax(1) == t_held.argmax(1)).float().mean().item()
    kl = F.kl_div(F.log_softmax(sh, 1), F.log_softmax(t_held, 1), log_target=True, reduction="batchmean").item()
    return agree, kl, (sv.argmax(1) == val.labels).float().mean().item()
for units in itertools.combinations(range(6), 3):
    s = create_model("lenet5_half", info.num_classes, info.in_channels, info.image_size).eval()
    kept = slicing.init_from_teacher(s, teacher, {"features.0": torch.tensor(units)})
    a0, k0, v0 = scores(s)
    slicing.refit_to_teacher(s, teacher, fit, kept)
    a1, k1, v1 = scores(s)
    rows.append((a0, -k0, v0, a1, -k1, v1))
    print(units, "L1" if units == l1_pick else "  ", f"sliced: agree {a0:.3f} kl {k0:.2f} val {v0:.4f} | refit: agree {a1:.4f} kl {k1:.3f} val {v1:.4f}", flush=True)
a = np.array(rows)
for i, n in enumerate(["sl-agree", "sl-negkl", "sl-val", "rf-agree", "rf-negkl"]):
    print(n, "spearman with refit val", round(spearmanr(a[:, i], a[:, 5]).correlation, 3), "with sliced val", round(spearmanr(a[:, i], a[:, 2]).correlation, 3))
