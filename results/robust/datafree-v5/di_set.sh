#!/bin/bash
# A DeepInversion set from the robust teacher (issue 19 item 4, session 21): pixels optimised from noise
# towards balanced target classes, no BN term (the teacher has none), a squared-L2 pixel penalty that
# keeps the ground dark (0.0005: pixel mean 0.26 on a 256-image probe, near the DAFL set's 0.28).
#   R=DIR SEED=S bash di_set.sh TEACHER_RUN_DIR NAME
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
T=$1; N=$2
R=${R:-runs/robust-v5}
SEED=${SEED:-0}
[ -f $R/$N/transfer_set/meta.json ] || python -m datafree_kd.cli synthesize --teacher $T/model.pt --method deepinversion \
  --n 20000 --seed $SEED --out $R/$N options.bn_weight=0 options.l2=0.0005 threads=1
