#!/usr/bin/env bash
# r13_arm.sh TEACHER OUT SEED INNER_STEPS FRACTION : a rule-R13 run -- the xl tier's synthesis with
# Fast-DFKD's inner steps set, then the two-term large-tier recipe with the neighbour term on
# FRACTION of each batch; one thread, CPU from /usr/bin/time (user + system) in OUT/synth.log and
# OUT/distill.log. Session 27: TEACHER=/work/runs/s25/wrn/t1/model.pt on the 2-core AMD EPYC,
# two runs side by side.
set -euo pipefail
export OMP_NUM_THREADS=1
teacher=$1 out=$2 seed=$3 inner=$4 fraction=$5
mkdir -p "$out"
[ -f "$out/set/results.json" ] || /usr/bin/time -v dfkd synthesize --teacher "$teacher" --seed "$seed" \
    --out "$out/set" threads=1 "options.inner_steps=$inner" > "$out/synth.log" 2>&1
/usr/bin/time -v dfkd distill --teacher "$teacher" --source "transfer:$out/set/transfer_set" --out "$out/student" \
    recipe=configs/distill/transfer-neighbours-large.yaml "term_options.explore.fraction=$fraction" \
    seed="$seed" threads=1 latency_runs=0 > "$out/distill.log" 2>&1
