#!/usr/bin/env bash
# Generate pseudo labels with several processes on one or more machines (torchrun), in the
# style of mmseg's tools/dist_train.sh: one tools/generate_pseudo.py rank per GPU, or per
# CPU core on a machine without GPUs (each rank uses 1 torch thread on the CPU, so N ranks
# use N cores and the outputs are byte-identical to one process).
#
# Usage:
#   [NNODES=1] [NODE_RANK=0] [PORT=29500] [MASTER_ADDR=127.0.0.1] [PYTHON=python] \
#       tools/dist_generate.sh CONFIG NPROC [generate_pseudo.py args ...]
#
#   CONFIG     generator config, e.g. configs/clip_es_voc.py
#   NPROC      processes on this machine (GPUs, or CPU cores without GPUs)
#   NNODES, NODE_RANK, MASTER_ADDR, PORT   torchrun's multi-node rendezvous (docs/multinode.md)
#
# Examples:
#   tools/dist_generate.sh configs/clip_es_voc.py 8 --work-dir work_dirs/voc_pseudo
#   tools/dist_generate.sh configs/clip_es_voc.py "$(nproc)"          # CPU only: one rank per core
#
# Rerunning the same command resumes (see README "Work-dir rules").
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NPROC [generate_pseudo.py args ...]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
if ! [[ $NPROC =~ ^[1-9][0-9]*$ ]]; then
    echo "error: NPROC must be a positive integer (processes on this machine), got '$NPROC'" >&2
    exit 2
fi
if [ ! -f "$CONFIG" ]; then
    echo "error: config file '$CONFIG' does not exist" >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$TOOLS_DIR/generate_pseudo.py" "$CONFIG" --launcher pytorch "$@"
