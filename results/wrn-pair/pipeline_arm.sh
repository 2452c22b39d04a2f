#!/usr/bin/env bash
# pipeline_arm.sh TEACHER OUT SEED [SYNTHESIZE_ARGS...] -- [DISTILL_ARGS...] : R12's user run (no
# arguments: r12_user.sh) or one arm of rules R13-R15 -- `dfkd synthesize` then `dfkd distill` of
# its set, each with the arm's extra arguments, one thread; CPU from /usr/bin/time (user + system) in OUT/synth.log, OUT/distill.log.
# A finished synthesis (OUT/set/results.json) is not redone. Session 27 ran it with
# TEACHER=/work/runs/s25/wrn/t1/model.pt on the 2-core AMD EPYC, two arms side by side:
#   R13 A: ... 0 options.inner_steps=2 -- recipe=configs/distill/transfer-neighbours-large.yaml term_options.explore.fraction=0.5
#   R13 B: the same with options.inner_steps=1
#   R14 C: ... SEED --n 5000 options.inner_steps=10 options.fit_rounds=25 -- epochs=48
#   R15 E: ... SEED --n 5000 generators=2 options.inner_steps=10 options.fit_rounds=13 -- epochs=48
set -euo pipefail
export OMP_NUM_THREADS=1
teacher=$1 out=$2 seed=$3; shift 3
synth=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do synth+=("$1"); shift; done
[ $# -gt 0 ] && shift
mkdir -p "$out"
[ -f "$out/set/results.json" ] || /usr/bin/time -v dfkd synthesize --teacher "$teacher" --seed "$seed" \
    --out "$out/set" threads=1 "${synth[@]}" > "$out/synth.log" 2>&1
/usr/bin/time -v dfkd distill --teacher "$teacher" --source "transfer:$out/set/transfer_set" --out "$out/student" \
    seed="$seed" threads=1 latency_runs=0 "$@" > "$out/distill.log" 2>&1
