#!/usr/bin/env bash
# r10_distill.sh TEACHER SETDIR OUT EPOCHS : the BN recipe (kd + explore, mixup), resnet8, float32 channels-last
set -euo pipefail
export OMP_NUM_THREADS=1
/usr/bin/time -v dfkd distill --teacher "$1" --source "transfer:$2/set/transfer_set" --out "$3" \
    student=resnet8 seed=0 threads=1 latency_runs=0 precision=float32 channels_last=true epochs="$4" > "$3.log" 2>&1
