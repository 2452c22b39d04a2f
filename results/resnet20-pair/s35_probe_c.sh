#!/usr/bin/env bash
# Session 35, rule R26's side probe (val only, nothing decided on it): the ResNet-20 tier's default
# set with `options.ce_weight=2` on one of R24's 12-epoch teachers (7, 8 or 9; their test has been
# read, so they can only choose), distilled with the tier's default recipe. Seeds = teacher seed.
# Usage: s35_probe_c.sh SEED ; val table: python results/resnet20-pair/s33_probe_val.py /work/runs/s35/p
set -eu
export OMP_NUM_THREADS=1
declare -A stage=([7]=teacher-802859ae4de0 [8]=teacher-e1e839dd357f [9]=teacher-eb6068e8419b)
s=$1; T=/work/runs/s34/stages/${stage[$s]}/model.pt; P=/work/runs/s35/p; name=r20-t$s-C
mkdir -p $P
/usr/bin/time -v dfkd synthesize --teacher $T --seed $s --out $P/$name threads=1 options.ce_weight=2 > $P/$name.log 2>&1
/usr/bin/time -v dfkd distill --teacher $T --source transfer:$P/$name/transfer_set --seed $s --out $P/$name-d \
  threads=1 latency_runs=0 > $P/$name-d.log 2>&1
