#!/usr/bin/env bash
# arm.sh TEACHER SET OUT OVERRIDE... : an R11 / R12 arm -- the large-tier recipe (dfkd distill's
# automatic recipe for this teacher in session 26 before R12) plus the arm's overrides, one thread:
#   W-E: epochs=10   W-I: transfer_size=4019   N-X: objective=explore=1   N-K: objective=kd=1
# (session 26 ran it with TEACHER=/work/runs/s25/wrn/t1/model.pt, SET=/work/runs/s25/wrn/set/transfer_set,
#  two arms side by side on the 2-core AMD EPYC; CPU = user + system from OUT.log)
set -euo pipefail
export OMP_NUM_THREADS=1
teacher=$1 set=$2 out=$3; shift 3
/usr/bin/time -v dfkd distill --teacher "$teacher" --source "transfer:$set" --out "$out" \
    recipe=configs/distill/transfer-neighbours-large.yaml seed=0 threads=1 latency_runs=0 "$@" > "$out.log" 2>&1
