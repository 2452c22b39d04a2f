#!/bin/bash
cd /work/main; export R=/work/runs/s30 SEED=0; T=results/teachers/fmnist-lenet5-pgd
OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S %e" -o $R/pgd-dafl-s0.time dfkd synthesize --teacher $T/model.pt --n 20000 --seed 0 --out $R/pgd-dafl-s0 threads=1 > $R/pgd-dafl-s0.log 2>&1
/usr/bin/time -f "%U %S %e" -o $R/pgd-divdi-s0.time bash results/robust/datafree-v5/di_set.sh $T pgd-divdi-s0 options.diversity=1.0 > $R/pgd-divdi-s0.log 2>&1
SETS=$R/pgd-divdi-s0/transfer_set,$R/pgd-dafl-s0/transfer_set /usr/bin/time -f "%U %S %e" -o $R/pgd-div-s0.time bash results/robust/datafree-v5/pipe.sh $T pgd-div-s0 > $R/pgd-div-s0.log 2>&1
