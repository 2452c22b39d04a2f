"""Usage: python s31_diagnose.py TEACHER.pt SET_DIR [STUDENT.pt | slice]

`slice` scores the untrained lenet5_half cut from the teacher (`student_init=teacher`, before any
fine-tuning).

Session 31's per-class diagnosis of a plain student (reads val only, never test). Per class:
the teacher's and the student's val accuracy, the student's agreement on the images the teacher
puts in the class; the set's count and mean teacher confidence by the teacher's argmax; in the
teacher's penultimate features, the mean pairwise cosine of the first 500 set / val images of the
class, the val images' nearest same-class set image (coverage) and whether their nearest set image
has their class. Then the student's most frequent errors where the teacher is right.
"""
import sys

import torch
import torch.nn.functional as F

from datafree_kd.checkpoint import load_model
from datafree_kd.data.builtin import fashion_mnist
from datafree_kd.evaluation import predict
from datafree_kd.metrics import agreement, per_class_accuracy, top1_accuracy
from datafree_kd.models import create_model
from datafree_kd.models.slicing import init_from_teacher
from datafree_kd.transfer_set import open_transfer_set
from generators.deepinversion import PenultimateFeatures

torch.set_num_threads(1)
if len(sys.argv) not in (3, 4):
    sys.exit(__doc__)


def logits_and_features(model, data):
    with PenultimateFeatures(model) as hook, torch.no_grad():
        out = [(model(x), hook.take()) for x, _ in data.batches(1000)]
    return torch.cat([o for o, _ in out]), F.normalize(torch.cat([f for _, f in out]), dim=1)


def mean_pairwise(f):
    f = f[:500]
    n = len(f)
    return float(((f @ f.T).sum() - n) / (n * (n - 1))) if n > 1 else float("nan")


teacher = load_model(sys.argv[1]).model.eval()
val = fashion_mnist("val")
synthetic = open_transfer_set(sys.argv[2], verify=False).load(None)
tv, fv = logits_and_features(teacher, val)
ts, fs = logits_and_features(teacher, synthetic)
pt, ps_set = tv.argmax(1), ts.argmax(1)
names, k = val.info.class_names, val.info.num_classes
t_acc = per_class_accuracy(tv, val.labels, k)
def load_student(arg):
    if arg != "slice":
        return load_model(arg).model.eval()
    info = val.info
    sliced = create_model("lenet5_half", info.num_classes, info.in_channels, info.image_size, mean=info.mean, std=info.std)
    init_from_teacher(sliced, teacher)
    return sliced.eval()


student = load_student(sys.argv[3]) if len(sys.argv) > 3 else None
if student is not None:
    with torch.no_grad():
        sv = predict(student, val)
    s_acc = per_class_accuracy(sv, val.labels, k)
    s_agree = per_class_accuracy(sv, pt, k)  # agreement on the images the teacher puts in each class
    print(f"val: teacher {top1_accuracy(tv, val.labels):.4f}  student {top1_accuracy(sv, val.labels):.4f}  "
          f"agreement {agreement(sv, tv):.4f}")
conf = ts.softmax(1).max(1).values
print("class        T-acc  S-acc  S-agree  set-n  set-conf  set-pair  val-pair  coverage  nn-class")
for c in range(k):
    a, b = fs[ps_set == c], fv[pt == c]
    nearest = (b @ fs.T).argmax(1)
    row = f"{names[c][:11]:11s}  {t_acc[c]:.3f}  "
    row += f"{s_acc[c]:.3f}  {s_agree[c]:.3f}    " if student is not None else "  -      -      "
    row += (f"{len(a):5d}  {float(conf[ps_set == c].mean()):.3f}     {mean_pairwise(a):.3f}     "
            f"{mean_pairwise(b):.3f}     {float((b @ a.T).max(1).values.mean()):.3f}     "
            f"{float((ps_set[nearest] == c).float().mean()):.3f}")
    print(row)
if student is not None:
    wrong = (pt == val.labels) & (sv.argmax(1) != val.labels)
    pairs = torch.bincount(val.labels[wrong] * k + sv.argmax(1)[wrong], minlength=k * k)
    top = pairs.topk(8)
    print("student errors where the teacher is right:",
          ", ".join(f"{names[i // k]}->{names[i % k]} {n}" for n, i in zip(top.values.tolist(), top.indices.tolist()) if n))
