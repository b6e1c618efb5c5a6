#!/bin/bash
# The GPU figures of the README ("On a GPU") and, optionally, DeRUN's eq. 14 trainings on the GPU
# (docs/derun-training.md, "The paper's recipe on a GPU"), as one command for a GPU machine.
#
# ../shared does not travel to such a machine: first, here, copy what the command reads into a
# folder inside the repository (git-ignored; about 24 MB):
#   bash benchmarks/device_run.sh --prepare .gpudata
# then, on the GPU machine, from the repository root (OUT gets the logs and one .tgz per training):
#   bash benchmarks/device_run.sh OUT .gpudata            # benchmarks only (about 90 s)
#   bash benchmarks/device_run.sh OUT .gpudata 500        # then trainings until 500 s after the start
# The metrics and multi-GPU batch figures need all 42 TNO pairs (20 MB), which do not fit beside the
# training data in one call (64 MiB travel), so they are a second call:
#   bash benchmarks/device_run.sh --prepare-metrics .gpumetrics        # here
#   bash benchmarks/device_run.sh --metrics OUT .gpumetrics            # there (about 2 min)
set -u
on_device() {  # the copied data as ../shared (bench_precision.py and bench_metrics.py read TNO there), a clock
  export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
  [ -e ../shared ] || ln -s "$PWD/$DATA/shared" ../shared
  T0=$(date +%s)
}
stamp() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
case "${1:-}" in
  --prepare-metrics)
    mkdir -p "${2:?folder}/shared/datasets" && cp -r ../shared/datasets/tno "$2/shared/datasets/"
    exit ;;
  --metrics)
    OUT=${2:?OUT}; DATA=${3:?data folder}
    on_device
    stamp bench_metrics
    timeout 100 python3 benchmarks/bench_metrics.py --device cuda --threads 4 --slow 3
    stamp "batch --devices 0"
    timeout 40 python3 -m fusecli batch ../shared/datasets/tno -o /tmp/tno-fused --devices 0 --batch-size 8 2>&1 | tail -2
    for d in cuda cpu; do  # the stamps give each run's wall time
      stamp "metrics -d $d"
      timeout 45 python3 -m fusecli metrics /tmp/tno-fused --sources ../shared/datasets/tno -d $d -C cddfuse \
        --json "$OUT/metrics_$d.json" 2>&1 | tail -3
    done
    stamp done
    exit ;;
  --prepare)
    DATA=${2:?folder}; S=../shared/datasets
    mkdir -p "$DATA/shared/datasets/tno/ir" "$DATA/shared/datasets/tno/vis"
    cp $S/tno/ir/10.png "$DATA/shared/datasets/tno/ir/"; cp $S/tno/vis/10.png "$DATA/shared/datasets/tno/vis/"
    for d in roadscene harvard_mri_pet harvard_mri_spect; do
      python benchmarks/split_folder.py $S/$d "$DATA/shared/datasets/${d}_fit" --part fit --copy
    done
    python benchmarks/derun_live_init.py "$DATA/live-init.safetensors"
    exit ;;
esac
OUT=${1:?OUT}; DATA=${2:?data folder}; END_S=${3:-0}
DEV=${DEVICE:-cuda}   # DEVICE=cpu: a dry run of this script on a machine without a GPU (fp16 then fails)
on_device
D=$DATA/shared/datasets
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
{
stamp bench_fuse
timeout 45 python3 benchmarks/bench_fuse.py --device $DEV --repeat 30 --operators composed
timeout 30 python3 benchmarks/bench_fuse.py --device $DEV --repeat 3 --size 4000x3000 --operators composed
stamp bench_precision
timeout 90 python3 benchmarks/bench_precision.py --device $DEV --precision fp16 --threads 4 --repeats 5 \
  --models auif,auif-fusion,laplacian,derun,derun-admm,cscfuse-ivf,cscfuse-mef
stamp bench_batch
timeout 45 python3 benchmarks/bench_batch.py --device $DEV --synthetic 640x480 --pairs 200 --batch-size 8 --rounds 2
stamp bench_derun_train
timeout 45 python3 benchmarks/bench_derun_train.py --device $DEV --steps 20 --data $D/roadscene_fit
} > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
TRAIN_S=$(( END_S - ($(date +%s) - T0) ))
if [ "$END_S" -gt 0 ] && [ "$TRAIN_S" -gt 0 ]; then
  stamp "four eq. 14 trainings side by side for $TRAIN_S s"
  # the paper's recipe (lr 1e-4, batch 4, 150 epochs), 128x128 crops, on the fit parts (copied, so --split all);
  # -live: from the classical start with every filter awake (benchmarks/derun_live_init.py's init file)
  common="--epochs 150 --crop 128 --batch-size 4 --lr 1e-4 --snapshots --split all --device $DEV"
  RS="--data $D/roadscene_fit"; HV="--data $D/harvard_mri_pet_fit --data $D/harvard_mri_spect_fit"
  export OMP_NUM_THREADS=3
  for run in "rs-eq14|$RS" "rs-eq14-live|$RS --init $DATA/live-init.safetensors" \
             "hv-eq14|$HV" "hv-eq14-live|$HV --init $DATA/live-init.safetensors"; do
    name=${run%%|*}
    timeout $TRAIN_S python3 -m fusecli train derun ${run#*|} -o /tmp/$name $common > /tmp/$name.log 2>&1 &
  done
  (timeout 240 python3 benchmarks/cuda_agreement.py --device $DEV
   python3 -m fusecli fuse samples/ir.png samples/vis_color.png -o /tmp/fused-cli.png -d $DEV && echo "CLI fuse -d $DEV: OK") \
    > "$OUT/cuda_agreement.txt" 2>&1 &
  sleep 20; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> "$OUT/env.txt" 2>&1
  wait
  for name in rs-eq14 rs-eq14-live hv-eq14 hv-eq14-live; do  # every 2nd snapshot, the first four and the last
    cp /tmp/$name.log /tmp/$name/train.log
    (cd /tmp/$name && tar czf "$OUT/$name.tgz" train.log last.pt \
       $(ls epoch-*.safetensors | awk 'NR % 2 == 0 || NR <= 4') $(ls epoch-*.safetensors | tail -1))
  done
else
  timeout 240 python3 benchmarks/cuda_agreement.py --device $DEV > "$OUT/cuda_agreement.txt" 2>&1
fi
stamp done
