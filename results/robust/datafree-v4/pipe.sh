#!/bin/bash
# Data-free robust pipeline for one teacher (issue 19 item 4, session 20; a PGD lenet5_bn, the TRADES lenet5):
# the default synthesis (`dfkd synthesize --n 20000`, method auto: fast with BN, else dafl), then RSLAD
# (the v2 recipe: 6,000 steps, random init, lr 0.05, mixup 1), scored on val (clean + PGD-20, eps 0.1).
#   R=DIR SEED=S [SYNTH="synthesis overrides"] bash pipe.sh TEACHER_RUN_DIR NAME [distill overrides...]
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
T=$1; N=$2; shift 2
R=${R:-runs/robust-v4}
SEED=${SEED:-0}
SET=${SET:-$R/$N-set}
TV=$R/$(basename $T)-val   # the teacher on val (written once; atomic writes make a second writer harmless)
[ -f $SET/transfer_set/meta.json ] || python -m datafree_kd.cli synthesize --teacher $T/model.pt --n 20000 --out $SET seed=$SEED threads=1 $SYNTH || exit 1
D=$R/$N
[ -f $D/results.json ] || python -m datafree_kd.cli distill --config $CFG --out $D --teacher $T/model.pt source=transfer:$SET/transfer_set seed=$SEED threads=1 "$@" || exit 1
[ -f $D-val/results.json ] || python -m datafree_kd.cli evaluate $D/model.pt --split val --attacks pgd20 --eps 0.1 --out $D-val latency_runs=0 threads=1
[ -f $TV/results.json ] || python -m datafree_kd.cli evaluate $T/model.pt --split val --attacks pgd20 --eps 0.1 --out $TV latency_runs=0 threads=1
