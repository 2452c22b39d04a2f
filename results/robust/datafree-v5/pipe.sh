#!/bin/bash
# RSLAD student from one or more transfer sets (a comma list; union in memory) with the shipped recipe
# (configs/distill/robust-rslad-init.yaml = the v2 config + student_init=teacher, lr 0.01), scored on val.
#   R=DIR SEED=S SETS=A,B bash pipe.sh TEACHER_RUN_DIR NAME [distill overrides...]
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
CFG=configs/distill/robust-rslad-init.yaml
T=$1; N=$2; shift 2
R=${R:-runs/robust-v5}
SEED=${SEED:-0}
D=$R/$N
# model.pt, not results.json, marks a finished student: a run named like a set is refused by distill, not skipped
# --resume continues a killed run from $D/last.pt (a fresh run when there is none)
[ -f $D/model.pt ] || python -m datafree_kd.cli distill --config $CFG --out $D --resume --teacher $T/model.pt source=transfer:$SETS \
  seed=$SEED threads=1 latency_runs=0 "$@" || exit 1
[ -f $D-val/results.json ] || python -m datafree_kd.cli evaluate $D/model.pt --split val --attacks pgd20 --eps 0.1 --out $D-val latency_runs=0 threads=1
