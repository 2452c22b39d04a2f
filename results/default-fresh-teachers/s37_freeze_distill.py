"""Probe: dfkd distill with the student's sliced layers named in FREEZE (comma-separated module
prefixes of the student, e.g. net.features or net.features.0) frozen after the teacher-slice init."""
import os, sys
import datafree_kd.distillation as D

_orig = D.init_from_teacher
def frozen_init(student, teacher, units=None, **kw):
    kept = _orig(student, teacher, units, **kw)
    prefixes = os.environ["FREEZE"].split(",")
    n = 0
    for name, p in student.named_parameters():
        if any(name.startswith(pre + ".") for pre in prefixes):
            p.requires_grad_(False); n += p.numel()
    print(f"froze {n} parameters under {prefixes}", flush=True)
    return kept
D.init_from_teacher = frozen_init
from datafree_kd.cli import main
sys.exit(main(sys.argv[1:]))
