#!/bin/bash
# Robust data-free screen (seed 0, RSLAD, 6000 steps): chosen on val clean + PGD-20 (eps 0.1, full val 5k).
cd /work/main
export OMP_NUM_THREADS=1
T=results/teachers/fmnist-lenet5-pgd/model.pt
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
SRC=transfer:/work/runs/robust/set/transfer_set
run() { name=$1; shift
  [ -f /work/runs/robust/screen/$name/results.json ] || python -m datafree_kd.cli distill --config $CFG --out /work/runs/robust/screen/$name source=$SRC threads=1 "$@" || return
  [ -f /work/runs/robust/screen/$name-val/results.json ] || python -m datafree_kd.cli evaluate /work/runs/robust/screen/$name/model.pt --split val --attacks pgd20 --eps 0.1 --out /work/runs/robust/screen/$name-val latency_runs=0 threads=1
}
for v in "$@"; do
  case $v in
    base) run base ;;
    init) run init student_init=teacher lr=0.01 ;;
    grey) run grey blur=1.5 brightness=0.9 ;;
    initgrey) run initgrey student_init=teacher lr=0.01 blur=1.5 brightness=0.9 ;;
  esac
done
