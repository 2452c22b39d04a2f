#!/bin/bash
# A DeepInversion set from the robust teacher (issue 19 item 4, session 21), with the shipped settings
# (configs/synthesize/robust-deepinversion.yaml: no BN term, l2 0.0005 chosen on a 256-image probe's pixel mean).
#   R=DIR SEED=S bash di_set.sh TEACHER_RUN_DIR NAME [synthesize overrides, e.g. options.mix_fraction=0.5]
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
T=$1; N=$2; shift 2
R=${R:-runs/robust-v5}
SEED=${SEED:-0}
[ -f $R/$N/transfer_set/meta.json ] || python -m datafree_kd.cli synthesize --teacher $T/model.pt \
  --config configs/synthesize/robust-deepinversion.yaml --seed $SEED --out $R/$N threads=1 "$@"
