#!/usr/bin/env bash
# Rule R24 step 2 (session 34): three new 12-epoch ResNet-20 teachers (seeds 7, 8, 9) and, on each,
# the default pipeline with L2's synthesis and distillation options as stage overrides.
# The teachers were trained first, three processes at once (one torch thread each), from an
# experiment holding only default-resnet20.yaml's teacher stage (same stage key, so the sweep
# below reuses them); then the L2 runs, two processes on the two cores as R24 says.
# Figures (test read once, after all three runs had finished):
#   python results/resnet20-pair/r21_gather.py /work/runs/s34/r24 > results/resnet20-pair/r24.csv
set -eu
export OMP_NUM_THREADS=1
R=/work/runs/s34
mkdir -p $R
cat > $R/teacher-only.yaml <<'YAML'
name: r24-teachers
defaults: {seed: 7}
stages:
  - name: teacher
    kind: teacher
    config: {dataset: fashion-mnist, arch: resnet20, latency_runs: 0}
YAML
dfkd sweep $R/teacher-only.yaml --seeds 7,8,9 --jobs 3 --out $R/teachers --stages $R/stages
dfkd sweep configs/experiments/default-resnet20.yaml --seeds 7,8,9 --jobs 2 --out $R/r24 --stages $R/stages \
  synthetic.n=5000 synthetic.options.fit_rounds=25 synthetic.options.inner_steps=10 student.epochs=62
