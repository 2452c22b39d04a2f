#!/usr/bin/env bash
# r10_synth.sh TEACHER OUT ROUNDS : the fast default with 10k images and ROUNDS meta rounds
set -euo pipefail
export OMP_NUM_THREADS=1
mkdir -p "$2"
/usr/bin/time -v dfkd synthesize --teacher "$1" --n 10000 --seed 0 --out "$2/set" threads=1 \
    options.fit_rounds="$3" fit_precision=auto channels_last=true > "$2/synth.log" 2>&1
