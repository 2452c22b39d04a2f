#!/usr/bin/env bash
# Session 33's val-only probes on R21's 12-epoch ResNet-20 teachers (seeds 4-6), one torch thread
# each. In the session they ran in this order from two queue files, one probe at a time, except
# t6-xl, started by hand beside t5-xl's distillation once R23's WRN run had ended. Table:
#   python results/resnet20-pair/s33_probe_val.py /work/runs/s33/p
# probe NAME SYNTH_STAGE STUDENT_STAGE EPOCHS SYNTH_OPTIONS...
set -u
export OMP_NUM_THREADS=1
S=/work/runs/s32/r21/stages
P=/work/runs/s33/p
probe() {
  name=$1; synth=$2; student=$3; epochs=$4; shift 4
  [ -f $P/$name/results.json ] || /usr/bin/time -v dfkd synthesize --config $S/$synth/config.yaml --out $P/$name threads=1 "$@" > $P/$name.log 2>&1
  [ -f $P/$name-d/results.json ] || /usr/bin/time -v dfkd distill --config $S/$student/config.yaml --source transfer:$P/$name/transfer_set --out $P/$name-d threads=1 epochs=$epochs > $P/$name-d.log 2>&1
}
# H2: images adapted for 10 inner steps (10,000 images, 50 meta rounds), R21's 31 epochs (2,418 steps)
probe t4-in10 synthetic-b99411dc3219 student-f2171dfb6603 31 options.inner_steps=10
# H2b: the batchnorm-xl tier's set (5,000 images, 10 inner steps, 25 meta rounds), 62 epochs = 2,418 steps
probe t4-xl synthetic-b99411dc3219 student-f2171dfb6603 62 n=5000 options.fit_rounds=25 options.inner_steps=10
probe t5-in10 synthetic-abc275e27fcc student-0e2a75982448 31 options.inner_steps=10
probe t6-in10 synthetic-3641775b060b student-58b24ec4a967 31 options.inner_steps=10
probe t5-xl synthetic-abc275e27fcc student-0e2a75982448 62 n=5000 options.fit_rounds=25 options.inner_steps=10
probe t6-xl synthetic-3641775b060b student-58b24ec4a967 62 n=5000 options.fit_rounds=25 options.inner_steps=10
