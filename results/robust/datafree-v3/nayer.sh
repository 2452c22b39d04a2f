#!/bin/bash
# Hypothesis: the robust students fail real Shirts and Trousers (val 0.01-0.02 / 0.04-0.28) because
# DAFL's sets starve Shirt (207 of 20k teacher labels) and draw near-binary shapes; NAYER's
# class-conditional generation (CE to a given label; bn_weight 0: the teacher has no BN) gives each
# class its share in smoother grey images. Same RSLAD variant `init`, seed 0, 6000 steps, chosen on val.
cd /work/main
export OMP_NUM_THREADS=1
T=results/teachers/fmnist-lenet5-pgd/model.pt
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
R=/work/runs/robust/nayer
[ -f $R/set/results.json ] || python -m datafree_kd.cli synthesize --teacher $T --method nayer --n 20000 --out $R/set options.bn_weight=0 seed=0 threads=1 || exit 1
[ -f $R/student/results.json ] || python -m datafree_kd.cli distill --config $CFG --out $R/student source=transfer:$R/set/transfer_set seed=0 threads=1 student_init=teacher lr=0.01 || exit 1
[ -f $R/val/results.json ] || python -m datafree_kd.cli evaluate $R/student/model.pt --split val --attacks pgd20 --eps 0.1 --out $R/val latency_runs=0 threads=1
