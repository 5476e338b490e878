#!/usr/bin/env bash
# Train on one machine with several GPUs.
#
#   launch/gpu_node.sh --config configs/sr_wgangp.py --workdir runs/sr [--gpus 8] [--per-gpu] [--dry-run] \
#       [--config.KEY=VALUE ...]
#
# Default: one process that drives every GPU of the machine (JAX sees them all as devices of one mesh); the
# simplest and usually the fastest on one node. --per-gpu starts one process per GPU instead, joined through
# JAX's coordinator on 127.0.0.1 (--coordinator_address/--num_processes/--process_id), the layout of a multi-node
# job, handy to rehearse one on a single machine. Either way the global batch and the results are the same.
# Logs go to WORKDIR/logs/process_<i>.log with --per-gpu; the script waits for every process and returns the
# first non-zero exit code (75 = preempted, rerun to resume).
set -euo pipefail

config="" workdir="" gpus="" per_gpu=0 dry_run=0 port="${RESTORE_JAX_PORT:-12355}"
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --per-gpu) per_gpu=1; shift ;;
    --port) port="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --config.*) overrides+=("$1"); shift ;;
    *) echo "gpu_node.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
[[ -n "$config" && -n "$workdir" ]] || { echo "gpu_node.sh: --config and --workdir are required" >&2; exit 2; }
if [[ -z "$gpus" ]]; then
  gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)
  [[ "$gpus" -gt 0 ]] || { echo "gpu_node.sh: no GPU found by nvidia-smi; pass --gpus N" >&2; exit 2; }
fi
python="${PYTHON:-python3}"

run() {  # Prints the command; runs it unless --dry-run.
  echo "$*"
  [[ $dry_run -eq 1 ]] || "$@"
}

if [[ $per_gpu -eq 0 ]]; then
  run "$python" -m restore_jax.main --config "$config" --workdir "$workdir" "${overrides[@]}"
  exit $?
fi

[[ $dry_run -eq 1 ]] || mkdir -p "$workdir/logs"
pids=()
for ((i = 0; i < gpus; i++)); do
  cmd=(env CUDA_VISIBLE_DEVICES="$i" "$python" -m restore_jax.main --config "$config" --workdir "$workdir"
       --coordinator_address "127.0.0.1:$port" --num_processes "$gpus" --process_id "$i" "${overrides[@]}")
  echo "${cmd[*]} > $workdir/logs/process_$i.log 2>&1 &"
  if [[ $dry_run -eq 0 ]]; then
    "${cmd[@]}" > "$workdir/logs/process_$i.log" 2>&1 &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [[ $status -ne 0 ]] || status=$code; }
done
exit $status
