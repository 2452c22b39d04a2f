#!/bin/bash
# Test split, read once for the chosen TRADES-teacher students: PGD-20 on the full 10k, AutoAttack on the first 1,000.
cd "$(dirname "$0")/../../.."; export OMP_NUM_THREADS=1
R=${R:-runs/robust-v4}
ev() { local M=$1 O=$2; shift 2; [ -f $O/results.json ] || python -m datafree_kd.cli evaluate $M --out $O latency_runs=0 threads=1 --eps 0.1 --attack-batch-size 500 "$@"; }
for N in "$@"; do
  if [ $N = teacher ]; then M=results/teachers/fmnist-lenet5-trades/model.pt; else M=$R/$N/model.pt; fi
  ev $M $R/$N-test --attacks pgd20
  ev $M $R/$N-aa1000 --attacks autoattack --attack-limit 1000
done
