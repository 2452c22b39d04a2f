#!/usr/bin/env bash
# one ResNet-20 -> ResNet-8 data-free run: pair.sh TEACHER OUT N FIT_ROUNDS EPOCHS [SEED]
set -euo pipefail
T=$1; OUT=$2; N=$3; R=$4; E=$5; S=${6:-0}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
/usr/bin/time -v dfkd synthesize --teacher "$T" --n "$N" --seed "$S" --out "$OUT/set" threads=1 \
    options.fit_rounds="$R" fit_precision=auto channels_last=true > "$OUT/synth.log" 2>&1
/usr/bin/time -v dfkd distill --teacher "$T" --source "transfer:$OUT/set/transfer_set" --out "$OUT/student" \
    student=resnet8 epochs="$E" seed="$S" threads=1 latency_runs=0 precision=bfloat16 channels_last=true > "$OUT/distill.log" 2>&1
echo done
