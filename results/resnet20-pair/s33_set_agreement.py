"""Usage: python s33_set_agreement.py TEACHER.pt SET_DIR STUDENT.pt

Session 33's fit check: how often a student agrees with its teacher on the whole transfer set it
was distilled from, and the two models' mean top-1 probability there (no real image is read).
Teacher 4 of R21: `python s33_set_agreement.py S/teacher-86fe038d842c/model.pt
S/synthetic-b99411dc3219/transfer_set S/student-f2171dfb6603/model.pt` (S = R21's stage folder).
"""
import sys

import torch

from datafree_kd.checkpoint import load_model
from datafree_kd.evaluation import predict
from datafree_kd.metrics import agreement
from datafree_kd.transfer_set import open_transfer_set

if len(sys.argv) != 4:
    sys.exit(__doc__)
torch.set_num_threads(1)
teacher, student = (load_model(p).model.eval() for p in (sys.argv[1], sys.argv[3]))
data = open_transfer_set(sys.argv[2], verify=False).load(None)
with torch.no_grad():
    t_logits, s_logits = predict(teacher, data), predict(student, data)
print(f"set agreement {agreement(s_logits, t_logits):.4f}  "
      f"teacher confidence {float(t_logits.softmax(1).max(1).values.mean()):.4f}  "
      f"student confidence {float(s_logits.softmax(1).max(1).values.mean()):.4f}")
