#!/bin/bash
# Dendritic ReLU and DCLS against the plain ResNet-10, two alternating rounds (Benchmarks/RESULTS.md,
# 2026-12-07): one line per clnet-bench model run, with images/s and the median step in ms, the
# model line, and the dendritic or DCLS layers' row of the per-kind table.
# Run from the repository root after `swift build -c release --build-path .build-rel`.
set -e
B=.build-rel/release/clnet-bench
M=resnet:block=basic,layers=1.1.1.1,stem=cifar,channels=1,classes=10
for r in 1 2; do
  for m in "$M" "$M,dendritic=3.4,dendritic_fc=1" "$M,dcls=3.4"; do
    out=$($B model --model "$m" --batch 32 --size 28 --warmup 1 --iters 5 --top 0 2>&1)
    echo "round $r | $m | $(echo "$out" | grep -A1 '^queues' | tail -1 | awk '{print $2, $3}') | $(echo "$out" | grep '^model:') | $(echo "$out" | grep 'dendritic conv\|dcls conv' | head -1 | awk '{print $1,$2,$3,$4,$5,$6,$7}')"
  done
done
