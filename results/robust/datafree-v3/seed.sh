#!/bin/bash
# Robust data-free pipeline for one seed: DAFL set (seed N) + RSLAD student with the val-chosen variant `init`.
cd /work/main
export OMP_NUM_THREADS=1
S=$1
T=results/teachers/fmnist-lenet5-pgd/model.pt
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
D=/work/runs/robust/seed$S
[ -f $D/set/transfer_set/meta.json ] || python -m datafree_kd.cli synthesize --teacher $T --n 20000 --out $D/set seed=$S threads=1 || exit 1
[ -f $D/student/results.json ] || python -m datafree_kd.cli distill --config $CFG --out $D/student source=transfer:$D/set/transfer_set seed=$S threads=1 student_init=teacher lr=0.01 || exit 1
[ -f $D/val/results.json ] || python -m datafree_kd.cli evaluate $D/student/model.pt --split val --attacks pgd20 --eps 0.1 --out $D/val latency_runs=0 threads=1
