#!/usr/bin/env bash
# r12_user.sh TEACHER OUT [SEED] : the defaults exactly as a user runs them (no options), one
# thread, CPU from /usr/bin/time (user + system) in OUT/synth.log and OUT/distill.log
set -euo pipefail
export OMP_NUM_THREADS=1
seed=${3:-0}
mkdir -p "$2"
/usr/bin/time -v dfkd synthesize --teacher "$1" --seed "$seed" --out "$2/set" threads=1 > "$2/synth.log" 2>&1
/usr/bin/time -v dfkd distill --teacher "$1" --source "transfer:$2/set" --out "$2/student" \
    seed="$seed" threads=1 latency_runs=0 > "$2/distill.log" 2>&1
