"""Usage: python s39_set_classes.py TEACHER.pt SET_DIR [SET_DIR ...]

Per class (by the teacher's argmax): how many images of each set, and the teacher's mean
confidence on them. Reads no real image: session 39's check of whether a larger `oversample`
fills the classes a dead-leaves set under-fills (Trouser on teachers 32 and 33).
"""
import sys

import torch

from datafree_kd.checkpoint import load_model
from datafree_kd.evaluation import predict
from datafree_kd.transfer_set import open_transfer_set

if len(sys.argv) < 3:
    sys.exit(__doc__)
loaded = load_model(sys.argv[1])
teacher, names = loaded.model.eval(), loaded.info.class_names
for path in sys.argv[2:]:
    with torch.inference_mode():
        confidence, label = predict(teacher, open_transfer_set(path).load()).softmax(1).max(1)
    print(path)
    for k, name in enumerate(names):
        chosen = label == k
        print(f"  {name:<12} n {int(chosen.sum()):5d}  conf {confidence[chosen].mean().item() if chosen.any() else float('nan'):.3f}")
