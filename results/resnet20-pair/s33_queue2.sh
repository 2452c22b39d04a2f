#!/usr/bin/env bash
# after queue.sh and the clean-clone CI: the batchnorm-xl tier's set on teachers 5 and 6 (H2b)
while pgrep -f "queue\.sh" > /dev/null || [ ! -f /work/runs/s33/ci.done ]; do sleep 20; done
set -u
export OMP_NUM_THREADS=1
S=/work/runs/s32/r21/stages
P=/work/runs/s33/p
probe() {
  name=$1; synth=$2; student=$3; epochs=$4; shift 4
  [ -f $P/$name/results.json ] || /usr/bin/time -v dfkd synthesize --config $S/$synth/config.yaml --out $P/$name threads=1 "$@" > $P/$name.log 2>&1
  [ -f $P/$name-d/results.json ] || /usr/bin/time -v dfkd distill --config $S/$student/config.yaml --source transfer:$P/$name/transfer_set --out $P/$name-d threads=1 epochs=$epochs > $P/$name-d.log 2>&1
}
probe t5-xl synthetic-abc275e27fcc student-0e2a75982448 62 n=5000 options.fit_rounds=25 options.inner_steps=10
probe t6-xl synthetic-3641775b060b student-58b24ec4a967 62 n=5000 options.fit_rounds=25 options.inner_steps=10
