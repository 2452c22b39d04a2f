#!/usr/bin/env bash
# distill.sh TEACHER OUT ARM : P1 = the BN recipe (kd + explore) 28 epochs; P2 = kd only, 56 epochs
set -euo pipefail
export OMP_NUM_THREADS=1
case $3 in
  P1) extra="epochs=28" ;;
  P2) extra="epochs=56 objective=kd=1" ;;
esac
/usr/bin/time -v dfkd distill --teacher "$1" --source "transfer:$2/set/transfer_set" --out "$2/$3" \
    student=resnet8 seed=0 threads=1 latency_runs=0 precision=float32 channels_last=true $extra > "$2/$3.log" 2>&1
