#!/bin/bash
# Session 38's dead-leaves probe (README, "Session 38"): R=DIR bash s38_dead_leaves.sh S...  (plain teachers S)
# Teacher and DAFL set from the plain experiment's stages (minus the distill stage), then arms A (DAFL set), P (DAFL set +
# 20k dead leaves) and, on teacher 6, L (dead leaves alone): 4,680 steps of the grey-init recipe, val only.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
R=${R:-runs/s38-dead-leaves}; mkdir -p $R
for S in "$@"; do
  sed '/name: student/,$d; s/defaults: {seed: 1}/defaults: {seed: '$S'}/' configs/experiments/default-plain-noeval.yaml > $R/sets-$S.yaml
  dfkd run $R/sets-$S.yaml --stages $R/stages --out $R/sets-$S > $R/sets-$S.log 2>&1 || exit 1
  T=$(grep -o "^\[teacher\] .* in .*\|^\[teacher\] reused .*" $R/sets-$S.log | awk '{print $NF}' | head -1)
  SET=$(grep -o "^\[synthetic\] .* in .*\|^\[synthetic\] reused .*" $R/sets-$S.log | awk '{print $NF}' | head -1)
  echo "teacher $S: $T  set: $SET"
  [ -f $R/dl-$S/meta.json ] || python results/default-fresh-teachers/s38_dead_leaves.py $T/model.pt $R/dl-$S 20000 $S > $R/dl-$S.log 2>&1 || exit 1
  COMMON="--config configs/distill/transfer-neighbours-grey-init.yaml --teacher $T/model.pt --student lenet5_half --seed $S threads=1 latency_runs=0 eval_every=1560 --steps 4680 --blind"
  ARMS="A P"; [ $S = 6 ] && ARMS="A P L"
  for ARM in $ARMS; do
    case $ARM in A) SRC=$SET/transfer_set;; P) SRC=$SET/transfer_set,$R/dl-$S;; L) SRC=$R/dl-$S;; esac
    [ -f $R/$ARM-$S/results.json ] || /usr/bin/time -f "%U %S %e" -o $R/$ARM-$S.time dfkd distill $COMMON \
      --source transfer:$SRC allow_foreign_set=true --out $R/$ARM-$S > $R/$ARM-$S.log 2>&1 || exit 1
  done
done
