#!/bin/bash
# One draw of round v8 on one robust teacher: the default DAFL set, then per arm (div | base) its DeepInversion
# set (div: options.diversity=1.0; base: v5's shipped settings) and the RSLAD student on the union, scored on val.
#   R=DIR bash worker.sh TEACHER_RUN_DIR S ARM... [PREFIX]     e.g. R=/work/runs/s30 bash worker.sh results/teachers/fmnist-lenet5-trades 0 div base
# Runs named {PREFIX}dafl-sS, {PREFIX}divdi-sS / {PREFIX}di-sS, {PREFIX}div-sS / {PREFIX}base-sS (PREFIX "pgd-" for the PGD teacher);
# each step is skipped when its output exists, so draws can share a DAFL set and a killed run can be restarted.
# (As run in session 30 the same commands came from three throw-away forms of this script; CPU from their /usr/bin/time files.)
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
T=$1; S=$2; shift 2
PREFIX=""; ARMS=()
for a in "$@"; do case $a in div|base) ARMS+=($a);; *) PREFIX=$a;; esac; done
export R=${R:-runs/robust-v8} SEED=$S
D=$R/${PREFIX}dafl-s$S
[ -f $D/transfer_set/meta.json ] || /usr/bin/time -f "%U %S %e" -o $D.time \
  python -m datafree_kd.cli synthesize --teacher $T/model.pt --n 20000 --seed $S --out $D threads=1 > $D.log 2>&1 || exit 1
for ARM in "${ARMS[@]}"; do
  if [ $ARM = div ]; then DI=${PREFIX}divdi-s$S; EXTRA="options.diversity=1.0"; else DI=${PREFIX}di-s$S; EXTRA=""; fi
  [ -f $R/$DI/transfer_set/meta.json ] || /usr/bin/time -f "%U %S %e" -o $R/$DI.time \
    bash results/robust/datafree-v5/di_set.sh $T $DI $EXTRA > $R/$DI.log 2>&1 || exit 1
  SETS=$R/$DI/transfer_set,$D/transfer_set /usr/bin/time -f "%U %S %e" -o $R/${PREFIX}$ARM-s$S.time \
    bash results/robust/datafree-v5/pipe.sh $T ${PREFIX}$ARM-s$S > $R/${PREFIX}$ARM-s$S.log 2>&1 || exit 1
done
