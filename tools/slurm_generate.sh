#!/usr/bin/env bash
# Generate pseudo labels on a Slurm cluster: one tools/generate_pseudo.py task per GPU,
# started by srun, ranks set up by mmengine's slurm launcher (--launcher slurm).
#
# Usage:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] [PORT=29500] [PYTHON=python] \
#       tools/slurm_generate.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [generate_pseudo.py args ...]
#
#   PARTITION       Slurm partition (srun -p)
#   JOB_NAME        Slurm job name
#   CONFIG          generator config, e.g. configs/clip_es_voc.py
#   WORK_DIR        optional output folder (--work-dir); a 4th argument starting with '-'
#                   is taken as the first generate_pseudo.py argument instead
#   GPUS            number of tasks (processes) in total, default 4
#   GPUS_PER_NODE   tasks and GPUs per node, default 4 (GPUS_PER_NODE=0: CPU-only
#                   partition, no --gres; GPUS is then the number of processes)
#   CPUS_PER_TASK   default 5
#   SRUN_ARGS       extra srun options, e.g. "--quotatype=auto" or "--time=4:00:00"
#   PORT            rendezvous port (MASTER_PORT), default: mmengine's 29500
#   PYTHON          interpreter, default "python"
#
# Example (2 nodes x 8 GPUs, VOC train_aug):
#   GPUS=16 GPUS_PER_NODE=8 tools/slurm_generate.sh gpu clip_es configs/clip_es_voc.py \
#       work_dirs/clip_es_voc/pseudo --cfg-options generator.clip.pretrained=/models/ViT-B-16.pt
#
# Every rank takes a disjoint shard of the images; the outputs are the same as those of
# one process (see docs/multinode.md). Rerunning the same command resumes.
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    WORK_DIR_ARGS=(--work-dir "$1")
    shift
fi
PY_ARGS=("$@")

GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

for var in GPUS GPUS_PER_NODE CPUS_PER_TASK; do
    value=${!var}
    case $value in
        ''|*[!0-9]*) echo "slurm_generate.sh: $var must be a whole number, got '$value'" >&2; exit 2 ;;
    esac
done
if [ "$GPUS" -lt 1 ]; then
    echo "slurm_generate.sh: GPUS (number of tasks) must be at least 1, got $GPUS" >&2
    exit 2
fi

RESOURCE_ARGS=(--ntasks="$GPUS" --cpus-per-task="$CPUS_PER_TASK")
if [ "$GPUS_PER_NODE" -gt 0 ]; then
    RESOURCE_ARGS+=(--gres=gpu:"$GPUS_PER_NODE" --ntasks-per-node="$GPUS_PER_NODE")
fi
if [ -n "${PORT:-}" ]; then
    export MASTER_PORT=$PORT
fi
export PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}"

set -x
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options, split on purpose
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${RESOURCE_ARGS[@]}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$TOOLS_DIR/generate_pseudo.py" "$CONFIG" ${WORK_DIR_ARGS[@]+"${WORK_DIR_ARGS[@]}"} \
    --launcher=slurm ${PY_ARGS[@]+"${PY_ARGS[@]}"}
