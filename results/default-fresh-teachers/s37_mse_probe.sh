#!/bin/bash
# exploration (val only, not a rule): logit MSE in place of KD-T in the plain grey-init recipe, 4,680 steps,
# session-31 teachers 5/6 and their first-draw sets; baseline rerun on this machine
cd /work/main
export OMP_NUM_THREADS=1
S=/work/runs/s31/stages
declare -A T=([5]=$S/teacher-e854050a2ac7 [6]=$S/teacher-2cb3adc35cfb)
declare -A D=([5]=$S/synthetic-d94243b063d6 [6]=$S/synthetic-a073e718338b)
for s in 6 5; do
 for arm in base mse; do
  obj="kd=1,explore=1"; [ $arm = mse ] && obj="mse=1,explore=1"
  dfkd distill --blind --config configs/distill/transfer-neighbours-grey-init.yaml --teacher ${T[$s]}/model.pt \
    --student lenet5_half --seed $s --source transfer:${D[$s]}/transfer_set --objective $obj --steps 4680 \
    --out /work/runs/s37/mse/$arm-t$s threads=1 latency_runs=0 eval_every=1560 > /work/runs/s37/mse/$arm-t$s.log 2>&1
 done
done
