#!/bin/bash
# SFT on several GPU nodes under Slurm: one `accelerate launch` per node, all joining one run.
#   sbatch scripts/slurm_sft.sh recipes/sft/s1_32b.yaml [recipes/accelerate/fsdp_2nodes.yaml]
# The node count comes from --nodes below (or sbatch --nodes N); GPUs per node from --gpus-per-node.
# A job that is requeued or resubmitted with the same recipe resumes from the newest checkpoint in the
# recipe's output_dir (resume: auto).
#SBATCH --job-name=sft
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --output=runs/slurm/%x-%j.out
set -euo pipefail

RECIPE=${1:?usage: sbatch scripts/slurm_sft.sh RECIPE [ACCELERATE_CONFIG]}
ACCELERATE_CONFIG=${2:-recipes/accelerate/fsdp_2nodes.yaml}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
PYTHON=${PYTHON:-.venv/bin/python}

mkdir -p runs/slurm
echo "job $SLURM_JOB_ID: $SLURM_NNODES nodes x $GPUS_PER_NODE GPUs, main node $MAIN_NODE, recipe $RECIPE"

# One task per node; each computes its own machine rank from Slurm's node id.
srun --kill-on-bad-exit=1 bash -c "
  $PYTHON -m accelerate.commands.launch \
    --config_file $ACCELERATE_CONFIG \
    --num_machines $SLURM_NNODES \
    --num_processes $NUM_PROCESSES \
    --machine_rank \$SLURM_NODEID \
    --main_process_ip $MAIN_NODE \
    --main_process_port $MAIN_PORT \
    -m sft $RECIPE
"
