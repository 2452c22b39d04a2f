#!/bin/bash
# The val-chosen variant (union-init) at student seed N: the same 60k union of the three DAFL sets
# (generator seeds 0/1/2) is shared by every student seed; only the student's seed changes.
cd /work/main
export OMP_NUM_THREADS=1
S=$1
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
R=/work/runs/robust
SRC=transfer:$R/set/transfer_set,$R/seed1/set/transfer_set,$R/seed2/set/transfer_set
D=$R/union-seed$S
[ -f $D/results.json ] || python -m datafree_kd.cli distill --config $CFG --out $D source=$SRC seed=$S threads=1 student_init=teacher lr=0.01 || exit 1
[ -f $D-val/results.json ] || python -m datafree_kd.cli evaluate $D/model.pt --split val --attacks pgd20 --eps 0.1 --out $D-val latency_runs=0 threads=1
