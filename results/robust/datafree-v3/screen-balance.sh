#!/bin/bash
# Robust screen on val: the v3 "init" variant with and without class_balance (DAFL set seed 0, Shirt 207 of 20k),
# and (session 18) on another set: SET=DIR (a synthesize output) names it, default $R/set.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
R=${R:-runs/robust}   # holds set/: dfkd synthesize --teacher T --n 20000 --out $R/set seed=0
V=$1; shift
SET=${SET:-$R/set}
D=$R/screen/$V
[ -f $D/results.json ] || python -m datafree_kd.cli distill --config $CFG --out $D source=transfer:$SET/transfer_set seed=0 threads=1 student_init=teacher lr=0.01 "$@" || exit 1
[ -f $D-val/results.json ] || python -m datafree_kd.cli evaluate $D/model.pt --split val --attacks pgd20 --eps 0.1 --out $D-val latency_runs=0 threads=1
