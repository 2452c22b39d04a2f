"""Usage: python s32_merge_init.py TEACHER.pt [TEACHER.pt ...]

Session 32: val accuracy (overall and per class) of the untrained lenet5_half cut from each plain
teacher, by the magnitude slice alone and with the dropped units merged (`init_merge`, at cosine
thresholds 0, 0.2, 0.4, 0.6). Reads val only.
"""
import sys

import torch

from datafree_kd.checkpoint import load_model
from datafree_kd.data.builtin import fashion_mnist
from datafree_kd.evaluation import predict
from datafree_kd.metrics import per_class_accuracy, top1_accuracy
from datafree_kd.models import create_model
from datafree_kd.models.slicing import init_from_teacher, merged_teacher

torch.set_num_threads(1)
if len(sys.argv) < 2:
    sys.exit(__doc__)
val = fashion_mnist("val")
info = val.info
print("init          merged  val     per class (" + ", ".join(info.class_names) + ")")
for path in sys.argv[1:]:
    teacher = load_model(path).model.eval()
    print(f"{path}: teacher val {top1_accuracy(predict(teacher, val), val.labels):.4f}")
    for threshold in (None, 0.0, 0.2, 0.4, 0.6):
        student = create_model("lenet5_half", info.num_classes, info.in_channels, info.image_size, mean=info.mean, std=info.std)
        kept = init_from_teacher(student, teacher, merge=threshold)
        folded = merged_teacher(teacher, kept, threshold)[1] if threshold is not None else 0
        logits = predict(student.eval(), val)
        label = "slice" if threshold is None else f"merge {threshold}"
        print(f"  {label:11s}  {folded:4d}   {top1_accuracy(logits, val.labels):.4f}  "
              + " ".join(f"{float(a):.2f}" for a in per_class_accuracy(logits, val.labels, info.num_classes)))
