#!/usr/bin/env bash
# Builds one libFuzzer target of Fuzz/ with AddressSanitizer and runs it:
#   Benchmarks/fuzz.sh TARGET SECONDS [more libFuzzer options]
#   Benchmarks/fuzz.sh safetensors 1800
# TARGET is a file name of Fuzz/ without .swift: safetensors, idx, cifar, modelspec, image, onnx.
# The corpus lives in .build-fuzz/corpus/TARGET, seeded from the test fixtures (and for onnx,
# model specifications); crashes and slow inputs go to .build-fuzz/findings/TARGET. The library
# is built with coverage (swift build -Xswiftc -sanitize=fuzzer,address) and the target linked
# against its objects, since SwiftPM's executables bring their own main and libFuzzer brings one.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer options]" >&2
    exit 2
fi
target=$1 seconds=$2
shift 2
cd "$(dirname "$0")/.."
[ -f "Fuzz/$target.swift" ] || { echo "fuzz.sh: no Fuzz/$target.swift" >&2; exit 2; }
scratch=.build-fuzz
swift build --scratch-path "$scratch" --target CLNet -Xswiftc -sanitize=fuzzer,address >&2
maps=()
for m in COpenCL CCLBlast CZlib CTurboJPEG CPNG; do maps+=(-Xcc "-fmodule-map-file=Sources/$m/module.modulemap"); done
cflags=()
for f in $(pkg-config --cflags-only-I libpng libturbojpeg OpenCL); do cflags+=(-Xcc "$f"); done
swiftc -sanitize=fuzzer,address -parse-as-library -g -I "$scratch/debug/Modules" "${maps[@]}" "${cflags[@]}" \
    "Fuzz/$target.swift" "$scratch"/debug/CLNet.build/*.o "$scratch"/debug/CLNetKernels.build/*.o \
    $(pkg-config --libs OpenCL clblast zlib libturbojpeg libpng) -o "$scratch/fuzz-$target" 2> >(grep -v "ld.gold: warning" >&2)

corpus=$scratch/corpus/$target findings=$scratch/findings/$target
mkdir -p "$corpus" "$findings"
fixtures=Tests/CLNetTests/Fixtures
case $target in
    safetensors) cp -n "$fixtures"/*.safetensors "$corpus"/ 2>/dev/null || true ;;
    image) cp -n "$fixtures"/images/* "$corpus"/ 2>/dev/null || true ;;
    idx)
        for f in /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz; do [ -f "$f" ] && cp -n "$f" "$corpus"/; done
        printf '\0\0\10\1\0\0\0\3\1\2\3' > "$corpus/labels" ;;
    cifar) head -c $((3 * 3073)) /dev/urandom > "$corpus/records" ;;
    modelspec | onnx)
        i=0
        for s in resnet18 resnet20 "resnet:block=bottleneck,layers=1.1,groups=4,width=4,sk=4,stem=cifar" \
                 "densenet:growth=4,blocks=2.2,init=8,bn_size=2" "cifar_resnet:depth=8,norm=none" "preact_resnet18:fold_bn=1" \
                 "wrn:depth=10,widen=2" "resnet20:rm=1" "resnet:block=basic,layers=1.1,act=prelu,norm=group:4,se=4"; do
            printf '%s\n' "$s" > "$corpus/spec$i"
            i=$((i + 1))
        done
        if [ "$target" = onnx ] && [ ! -f "$corpus/weights-record" ]; then
            # A specification line and real weights (with their record) after it, from one step
            # of training a CIFAR ResNet-8 on Fashion-MNIST.
            swift build --product clnet >&2
            .build/debug/clnet train --model cifar_resnet:depth=8 --train-subset 64 --test-subset 16 --batch-size 32 \
                --max-steps 1 --output "$scratch/seed-run" >&2
            { printf '\n'; cat "$scratch/seed-run/model.safetensors"; } > "$corpus/weights-record"
            { printf 'cifar_resnet:depth=8\n'; cat "$scratch/seed-run/model.safetensors"; } > "$corpus/weights-given"
        fi ;;
esac
# Allocation limits well under the machine's memory: an input that asks for more than it
# justifies is a finding.
"$scratch/fuzz-$target" -max_total_time="$seconds" -timeout=10 -malloc_limit_mb=1024 -rss_limit_mb=3072 \
    -artifact_prefix="$findings/" -print_final_stats=1 "$@" "$corpus"
