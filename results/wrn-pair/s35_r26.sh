#!/usr/bin/env bash
# Rule R26 (session 35): one arm on R23's 15-epoch WRN-16-2 teacher, as a val probe.
# Usage: s35_r26.sh ARM   (ARM = C | S | E, or SE: the best two stacked, as R26 asks when two clear 1.0 point)
# Val table (reads no test figure): python results/resnet20-pair/s33_probe_val.py /work/runs/s35/p
set -eu
export OMP_NUM_THREADS=1
T=/work/runs/s33/r23/stages/teacher-c3ac4328a911/model.pt
R23_SET=/work/runs/s33/r23/stages/synthetic-695d27614dce
P=/work/runs/s35/p
mkdir -p $P
arm=$1; synth_opts=""; distill_opts=""
case $arm in
  C) synth_opts="options.ce_weight=2" ;;
  S) synth_opts="options.inner_steps=15" ;;
  E) distill_opts="epochs=102" ;;
  SE) distill_opts="epochs=102" ;;   # the stacked arm: S's own set (same options, same seed), E's epochs
esac
if [ "$arm" = E ] || [ "$arm" = SE ]; then
  # a set made before; its synthesis CPU is the set's own cpu_time_s record
  if [ "$arm" = E ]; then set_dir=$R23_SET; else set_dir=$P/S; fi
else
  set_dir=$P/$arm
  /usr/bin/time -v dfkd synthesize --teacher $T --seed 4 --out $set_dir threads=1 $synth_opts > $P/$arm.log 2>&1
fi
/usr/bin/time -v dfkd distill --teacher $T --source transfer:$set_dir/transfer_set --seed 4 --out $P/$arm-d \
  threads=1 latency_runs=0 $distill_opts > $P/$arm-d.log 2>&1
