"""Usage: python s40_disagreement_round.py TEACHER.pt SET STUDENT.pt CANDIDATES KEEP STEPS SEED

Probe D40 (session 40, val only): does a second round of dead-leaves images, kept where the trained
student disagrees with the teacher, teach the plain student what the first set did not?

Draws CANDIDATES mirrored dead-leaves images (``symmetric=0.5``, as the default), scores each by
the L1 distance between teacher and student probabilities, and keeps KEEP of them class-balanced
by the teacher (score = teacher probability x disagreement). Then fine-tunes two copies of the
student for STEPS steps each (kd at temperature 4 on mixup pairs, SGD lr 0.001 cosine, batch 128):
``control`` on SET alone, ``round`` on SET plus the kept images, so that the difference is the new
images and not the extra steps. Prints the val accuracy of the student before and of both arms
after. No real training image is read; val is the last 5,000 of the training split, never test.
One torch thread.
"""
import copy
import sys

import torch
import torch.nn.functional as F

from datafree_kd.checkpoint import load_model
from datafree_kd.data.builtin import fashion_mnist
from datafree_kd.evaluation import predict
from datafree_kd.metrics import top1_accuracy
from datafree_kd.transfer_set import open_transfer_set
from generators.procedural import class_balanced, dead_leaves

torch.set_num_threads(1)
if len(sys.argv) != 8:
    sys.exit(__doc__)
teacher_path, set_path, student_path = sys.argv[1:4]
candidates, keep, steps, seed = (int(a) for a in sys.argv[4:8])
teacher = load_model(teacher_path).model.eval()
student = load_model(student_path).model.eval()
for p in teacher.parameters():
    p.requires_grad_(False)
val = fashion_mnist("val")
images = open_transfer_set(set_path).load(None).images.float() / 255.0
generator = torch.Generator().manual_seed(seed)


@torch.no_grad()
def probabilities(model, x):
    return torch.cat([model(chunk).softmax(1) for chunk in x.split(2000)])


def val_accuracy(model):
    with torch.no_grad():
        return top1_accuracy(predict(model.eval(), val), val.labels)


drawn = torch.cat([dead_leaves(10_000, 1, 28, generator, 6, 0.5) for _ in range(candidates // 10_000)])
p_teacher, p_student = probabilities(teacher, drawn), probabilities(student, drawn)
disagreement = (p_teacher - p_student).abs().sum(1)
kept = drawn[class_balanced(p_teacher * disagreement[:, None], keep, generator)]
print(f"candidates {len(drawn)}: mean disagreement {disagreement.mean():.3f}; kept {len(kept)}: "
      f"{float((probabilities(teacher, kept) - probabilities(student, kept)).abs().sum(1).mean()):.3f}; "
      f"teacher classes {torch.bincount(probabilities(teacher, kept).argmax(1), minlength=10).tolist()}")


def fine_tune(model, pool):
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        a, b = pool[torch.randint(len(pool), (128,), generator=g)], pool[torch.randint(len(pool), (128,), generator=g)]
        lam = torch.rand(128, 1, 1, 1, generator=g)
        x = lam * a + (1 - lam) * b
        with torch.no_grad():
            target = (teacher(x) / 4).softmax(1)
        loss = F.kl_div((model(x) / 4).log_softmax(1), target, reduction="batchmean") * 16
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
    return model


before = val_accuracy(student)
control = val_accuracy(fine_tune(student, images))
round_ = val_accuracy(fine_tune(student, torch.cat([images, kept])))
print(f"val: before {before:.4f}  control {control:.4f}  round {round_:.4f}  round - control {100 * (round_ - control):+.2f}")
