#!/bin/bash
# Deformable convolution and SEW ResNet against their plain ResNets, two alternating rounds
# (Benchmarks/RESULTS.md, 2026-12-07): one line per clnet-bench model run, with images/s, the
# median step in ms, the model line, and the deformable or spiking layers' rows.
# Run from the repository root after `swift build -c release --build-path .build-rel`.
set -e
B=.build-rel/release/clnet-bench
M=resnet:block=basic,layers=1.1.1.1,stem=cifar,channels=1,classes=10
S=block=basic,layers=1.1,stem=cifar,channels=1,classes=10
for r in 1 2; do
  for m in "$M" "$M,deform=3.4" "$M,deform=3.4,dcn=v2" "resnet:$S" "sew_resnet:$S,T=1" "sew_resnet:$S,T=2" "sew_resnet:$S,T=4"; do
    out=$($B model --model "$m" --batch 32 --size 28 --warmup 1 --iters 5 --top 0 2>&1)
    echo "round $r | $m | $(echo "$out" | grep -A1 '^queues' | tail -1 | awk '{print $2, $3}') | $(echo "$out" | grep '^model:' ) | $(echo "$out" | grep 'deformable conv\|spiking neuron' | head -2 | awk '{print $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12}' | tr '\n' ';')"
  done
done
