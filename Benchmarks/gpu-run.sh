#!/usr/bin/env bash
# Runs a bundled CLNet executable on a GPU machine with every OpenCL driver it has visible.
#   on the build machine: ../shared/tools/bundle-for-gpu .gpu clnet clnet-bench
#   on the GPU machine:   Benchmarks/gpu-run.sh clnet-bench peak
# .gpu/run adds NVIDIA's driver only when /etc/OpenCL/vendors is empty; GPU images that also ship
# PoCL there would then show the CPU alone. This lists NVIDIA's driver beside the installed ones.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
icd=$(mktemp -d)
cp /etc/OpenCL/vendors/*.icd "$icd/" 2>/dev/null || true
drv=$( (ldconfig -p | awk '/libnvidia-opencl.so.1/ {print $NF; exit}'); find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libnvidia-opencl.so.1' 2>/dev/null | head -n 1)
drv=$(echo "$drv" | grep -m1 . || true)
[ -n "$drv" ] && echo "$drv" > "$icd/nvidia.icd"
export OCL_ICD_VENDORS="$icd"
exec "$here/.gpu/run" "$@"
