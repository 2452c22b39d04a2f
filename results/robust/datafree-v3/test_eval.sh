#!/bin/bash
# Test figures of a chosen robust student: clean + PGD-20 on the full 10k test set, then AutoAttack
# (reference strength) on the first LIMIT test images (0 = all). Usage: test_eval.sh MODEL_DIR LIMIT
cd /work/main
export OMP_NUM_THREADS=1
M=$1; L=$2
[ -f $M-test/results.json ] || python -m datafree_kd.cli evaluate $M/model.pt --attacks pgd20 --eps 0.1 --attack-batch-size 500 --out $M-test latency_runs=0 threads=1 || exit 1
[ -f $M-aa$L/results.json ] || python -m datafree_kd.cli evaluate $M/model.pt --attacks autoattack --eps 0.1 --attack-limit $L --attack-batch-size 500 --out $M-aa$L latency_runs=0 threads=1
