"""Probe: weight-norm slice vs reconstruction-selected slice, per teacher: sliced and refit val accuracy
and agreement with the teacher on held-out synthetic images (val is read for this diagnosis only)."""
import sys, time
import torch, torch.nn.functional as F
from datafree_kd.teacher import load_teacher
from datafree_kd.models import create_model, slicing
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.registry import load_dataset

torch.set_num_threads(1)
val = load_dataset("fashion-mnist", "val"); vx = val.as_float(val.images)
for teacher_path, set_path in zip(sys.argv[1::2], sys.argv[2::2]):
    loaded = load_teacher(teacher_path); teacher = loaded.model.eval(); info = loaded.info
    data = open_transfer_set(set_path).load(7000); imgs = data.as_float(data.images)
    fit, held = imgs[:5000], imgs[5000:7000]
    with torch.no_grad():
        t_held = teacher(held)
    def scores(s):
        with torch.no_grad():
            sh = s(held); sv = s(vx)
        return ((sh.argmax(1) == t_held.argmax(1)).float().mean().item(),
                F.kl_div(F.log_softmax(sh, 1), F.log_softmax(t_held, 1), log_target=True, reduction="batchmean").item(),
                (sv.argmax(1) == val.labels).float().mean().item())
    for how in ("l1", "select"):
        s = create_model("lenet5_half", info.num_classes, info.in_channels, info.image_size).eval()
        t0 = time.process_time()
        units = slicing.select_units(s, teacher, fit) if how == "select" else None
        dt = time.process_time() - t0
        kept = slicing.init_from_teacher(s, teacher, units)
        a0 = scores(s)
        slicing.refit_to_teacher(s, teacher, fit, kept)
        a1 = scores(s)
        print(teacher_path.split("/")[-2], how, f"select {dt:.1f}s | sliced agree {a0[0]:.3f} kl {a0[1]:.2f} val {a0[2]:.4f} | refit agree {a1[0]:.3f} kl {a1[1]:.3f} val {a1[2]:.4f}",
              "conv1", kept["features.0"].tolist(), flush=True)
