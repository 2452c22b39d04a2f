#!/bin/bash
# worker.sh S ARMS... : after dafl-sS is done, for each arm (div|base) make its DI set then the RSLAD student
S=$1; shift
cd /work/main
export R=/work/runs/s30 SEED=$S
T=results/teachers/fmnist-lenet5-trades
while [ ! -f $R/dafl-s$S.time ]; do sleep 10; done
for ARM in "$@"; do
  if [ $ARM = div ]; then DI=divdi-s$S; EXTRA="options.diversity=1.0"; else DI=di-s$S; EXTRA=""; fi
  /usr/bin/time -f "%U %S %e" -o $R/$DI.time bash results/robust/datafree-v5/di_set.sh $T $DI $EXTRA > $R/$DI.log 2>&1
  SETS=$R/$DI/transfer_set,$R/dafl-s$S/transfer_set /usr/bin/time -f "%U %S %e" -o $R/$ARM-s$S.time \
    bash results/robust/datafree-v5/pipe.sh $T $ARM-s$S > $R/$ARM-s$S.log 2>&1
done
