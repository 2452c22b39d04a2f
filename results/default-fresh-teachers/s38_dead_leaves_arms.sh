#!/bin/bash
# Follow-up arms of session 38's dead-leaves probe on the teachers and sets s38_dead_leaves.sh made:
#   R=DIR SYM=P ARM=NAME SRC=dl|dafl+dl bash s38_dead_leaves_arms.sh S...
# makes the dead-leaves set with symmetric share P (R/dl-NAME-S) and distils the same 4,680-step probe from it
# (SRC=dl) or from it beside the teacher's DAFL set (SRC=dafl+dl), into R/NAME-S. Val only (--blind).
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
R=${R:-runs/s38-dead-leaves}
for S in "$@"; do
  T=$(grep -o "^\[teacher\] .* in .*\|^\[teacher\] reused .*" $R/sets-$S.log | awk '{print $NF}' | head -1)
  SET=$(grep -o "^\[synthetic\] .* in .*\|^\[synthetic\] reused .*" $R/sets-$S.log | awk '{print $NF}' | head -1)
  DL=$R/dl-$ARM-$S
  [ -f $DL/meta.json ] || python results/default-fresh-teachers/s38_dead_leaves.py $T/model.pt $DL 20000 $S 200000 $SYM > $DL.log 2>&1 || exit 1
  case $SRC in dl) SOURCE=$DL;; dafl+dl) SOURCE=$SET/transfer_set,$DL;; *) echo "SRC=dl|dafl+dl"; exit 1;; esac
  [ -f $R/$ARM-$S/results.json ] || /usr/bin/time -f "%U %S %e" -o $R/$ARM-$S.time dfkd distill \
    --config configs/distill/transfer-neighbours-grey-init.yaml --teacher $T/model.pt --student lenet5_half --seed $S \
    threads=1 latency_runs=0 eval_every=1560 --steps 4680 --blind --source transfer:$SOURCE allow_foreign_set=true \
    --out $R/$ARM-$S > $R/$ARM-$S.log 2>&1 || exit 1
done
