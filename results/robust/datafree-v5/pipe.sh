#!/bin/bash
# RSLAD student from one or more transfer sets (a comma list; union in memory), the v3/v4 recipe
# (v2 config + student_init=teacher, lr 0.01, 6,000 steps), scored on val (clean + PGD-20, eps 0.1).
#   R=DIR SEED=S SETS=A,B bash pipe.sh TEACHER_RUN_DIR NAME [distill overrides...]
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
CFG=results/robust/datafree-v2/rslad-distill-config.yaml
T=$1; N=$2; shift 2
R=${R:-runs/robust-v5}
SEED=${SEED:-0}
D=$R/$N
[ -f $D/results.json ] || python -m datafree_kd.cli distill --config $CFG --out $D --teacher $T/model.pt source=transfer:$SETS \
  seed=$SEED threads=1 student_init=teacher lr=0.01 "$@" || exit 1
[ -f $D-val/results.json ] || python -m datafree_kd.cli evaluate $D/model.pt --split val --attacks pgd20 --eps 0.1 --out $D-val latency_runs=0 threads=1
