#!/usr/bin/env bash
# Rule R27 (pre-registered in session 35): L2 (the current batchnorm-large default) against S15
# (the same with 15 inner steps) on new 12-epoch ResNet-20 teachers 10, 11, 12. The teachers were
# trained first (/work/runs/s34/teacher-only.yaml, same stage key as default-resnet20.yaml's
# teacher stage); the sweeps reuse them and any stage finished before (an interrupted sweep is rerun
# with the same command). Both sweeps must run with the same DEFAULTS table (the synthesis stage key
# hashes it). Choice on val only:
#   python results/default-fresh-teachers/s32_val_only.py R/r27-l2 ; ... R/r27-s15
set -eu
export OMP_NUM_THREADS=1
R=/work/runs/s34
dfkd sweep configs/experiments/default-resnet20.yaml --seeds 10,11,12 --jobs 2 --out $R/r27-l2 --stages $R/stages
dfkd sweep configs/experiments/default-resnet20.yaml --seeds 10,11,12 --jobs 2 --out $R/r27-s15 --stages $R/stages \
  synthetic.options.inner_steps=15
