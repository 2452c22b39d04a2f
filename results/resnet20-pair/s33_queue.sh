#!/usr/bin/env bash
# session-33 val-only probes on R21's 12-epoch ResNet-20 teachers, one thread, in sequence
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
# H2b: the batchnorm-xl tier's set (5,000 images, 10 inner steps, 25 meta rounds), R21's 2,418 steps
probe t4-xl synthetic-b99411dc3219 student-f2171dfb6603 62 n=5000 options.fit_rounds=25 options.inner_steps=10
# H2 on teachers 5 and 6
probe t5-in10 synthetic-abc275e27fcc student-0e2a75982448 31 options.inner_steps=10
probe t6-in10 synthetic-3641775b060b student-58b24ec4a967 31 options.inner_steps=10
