"""Probe (session 18): does DAFL's ``input_stats`` term fix the polarity of a plain teacher's set?

Usage: python probe_input_stats.py TEACHER/model.pt WEIGHT
Fits the default DAFL (800 steps, batch 256, lr 0.02) with that weight on one thread and prints
the sampled images' pixel statistics, the share with a white top row and the teacher's labels.
"""
import math
import sys
import time

import torch

from datafree_kd.synthesis import build_synthesizer
from datafree_kd.teacher import load_teacher

torch.set_num_threads(1)
path, weight = sys.argv[1], float(sys.argv[2])
loaded = load_teacher(path)
teacher, info = loaded.model.eval(), loaded.info
synth = build_synthesizer("dafl", info, {"fit_steps": 800, "batch_size": 256, "lr": 0.02, "input_stats": weight})
g = torch.Generator().manual_seed(1)
start = time.process_time()
logs = synth.fit(teacher, g, torch.device("cpu"))
with torch.no_grad():
    x = synth.generate(teacher, 2048, g, torch.device("cpu"))
    counts = torch.bincount(teacher(x).argmax(1), minlength=info.num_classes).float()
q = counts[counts > 0] / counts.sum()
print(f"w {weight} cpu {time.process_time() - start:.0f}s pixel mean {x.mean():.3f} std {x.std():.3f}",
      f"white top row {(x[:, :, 0, :].mean((1, 2)) > 0.5).float().mean():.2f}",
      f"saturated {((x < .01) | (x > .99)).float().mean():.2f}",
      f"label entropy {float(-(q * q.log()).sum() / math.log(info.num_classes)):.3f}", counts.int().tolist(),
      {k: round(v, 3) for k, v in logs.items()})
