#!/usr/bin/env bash
# Rule R28 (pre-registered in session 36): arm E (R27's S15 with 100 distillation epochs) on teachers
# 10-12, reusing R27's S15 sets. Run from a worktree at 13a9a45~1 (the defaults table R27's stage keys
# hash), e.g. `git worktree add /work/wt36e 13a9a45~1 && cd /work/wt36e && PYTHONPATH=$PWD bash THIS`.
# Choice on val only: python results/default-fresh-teachers/s32_val_only.py R/r28-e
set -eu
export OMP_NUM_THREADS=1
R=/work/runs/s34
dfkd sweep configs/experiments/default-resnet20.yaml --seeds 10,11,12 --jobs ${JOBS:-2} --out $R/r28-e --stages $R/stages \
  synthetic.options.inner_steps=15 student.epochs=100
