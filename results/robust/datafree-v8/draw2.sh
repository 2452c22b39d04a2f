#!/bin/bash
cd /work/main; export R=/work/runs/s30 SEED=2; T=results/teachers/fmnist-lenet5-trades
ARM=$1
if [ $ARM = div ]; then DI=divdi-s2; EXTRA="options.diversity=1.0"; else DI=di-s2; EXTRA=""; fi
[ -f $R/$DI/transfer_set/meta.json ] || /usr/bin/time -f "%U %S %e" -o $R/$DI.time bash results/robust/datafree-v5/di_set.sh $T $DI $EXTRA > $R/$DI.log 2>&1
SETS=$R/$DI/transfer_set,$R/dafl-s2/transfer_set /usr/bin/time -f "%U %S %e" -o $R/$ARM-s2.time bash results/robust/datafree-v5/pipe.sh $T $ARM-s2 > $R/$ARM-s2.log 2>&1
