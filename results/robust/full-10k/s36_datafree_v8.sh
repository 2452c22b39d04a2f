#!/bin/bash
# Full-10k AutoAttack for the adopted data-free robust students (issue 19 item 4; round v8's recipe,
# results/robust/datafree-v8/): the three draws are trained again (their session-30 checkpoints were
# lost with that machine), scored on val PGD-20 (to compare with session 30's val figures), then on
# the whole test split: clean, PGD-20 and standard AutoAttack. The evaluations journal every batch
# (OUT/attacks.jsonl), so the same command rerun after an interruption resumes where it stopped.
#   R=DIR bash s36_datafree_v8.sh train S...     # the students of draws S (DAFL + diverse DI sets, RSLAD)
#   R=DIR bash s36_datafree_v8.sh test NAME...   # NAME = teacher | div-sS
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
T=results/teachers/fmnist-lenet5-trades
export R=${R:-runs/robust-full10k}
MODE=$1; shift
for N in "$@"; do
  if [ $MODE = train ]; then
    bash results/robust/datafree-v8/worker.sh $T $N div || exit 1
  else
    if [ $N = teacher ]; then M=$T/model.pt; else M=$R/$N/model.pt; fi
    [ -f $R/$N-aa10k/results.json ] || /usr/bin/time -f "%U %S %e" -o $R/$N-aa10k.time \
      python -m datafree_kd.cli evaluate $M --out $R/$N-aa10k --attacks pgd20,autoattack --eps 0.1 \
      --attack-batch-size 500 latency_runs=0 threads=1 > $R/$N-aa10k.log 2>&1 || exit 1
  fi
done
