#!/usr/bin/env bash
# CLNet against PyTorch on one model, batch and mode, in one go, with the same rules:
#   Benchmarks/compare.sh MODEL BATCH MODE [more clnet-bench model options, e.g. --device 1]
#   Benchmarks/compare.sh resnet50 8 train
# Prints both frameworks' images/s and step times, and CLNet / PyTorch as a ratio (above 1: CLNet
# is faster). Environment:
#   CLNET_BENCH  the clnet-bench command (default: .build/release/clnet-bench, built when missing;
#                on a GPU machine with the static bundle: "Benchmarks/gpu-run.sh clnet-bench")
#   WARMUP, ITERS  untimed and timed steps for both (default 2 and 10)
#   PRECISION    PyTorch's --precision: default, fp32 or tf32 (default: default)
#   TORCH_DEVICE PyTorch's --device (default: cuda when available, else cpu)
#   TOP          rows of CLNet's slowest-layers table (default 10; 0: none)
# PyTorch is optional: without it the CLNet side is printed alone, with a line saying so.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 MODEL BATCH MODE [clnet-bench model options]" >&2
    exit 2
fi
model=$1 batch=$2 mode=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
warmup=${WARMUP:-2} iters=${ITERS:-10}
if [ -z "${CLNET_BENCH:-}" ]; then
    CLNET_BENCH=.build/release/clnet-bench
    [ -x "$CLNET_BENCH" ] || swift build -c release --product clnet-bench >&2
fi
command -v python3 >/dev/null || { echo "compare.sh: python3 is needed to read the JSON reports" >&2; exit 2; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# shellcheck disable=SC2086 # CLNET_BENCH may be a command with arguments
$CLNET_BENCH model --model "$model" --batch "$batch" --mode "$mode" --warmup "$warmup" --iters "$iters" --json "$@" \
    > "$out/clnet.json"
size=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["size"])' "$out/clnet.json")
torch_args=(--model "$model" --batch "$batch" --mode "$mode" --size "$size" --warmup "$warmup" --iters "$iters"
            --precision "${PRECISION:-default}" --json)
[ -n "${TORCH_DEVICE:-}" ] && torch_args+=(--device "$TORCH_DEVICE")
status=0
python3 Benchmarks/pytorch_baseline.py "${torch_args[@]}" > "$out/pytorch.json" || status=$?
if [ "$status" -eq 3 ]; then
    echo "compare.sh: PyTorch is not installed here; CLNet alone:" >&2
    rm -f "$out/pytorch.json"
elif [ "$status" -ne 0 ]; then
    echo "compare.sh: the PyTorch side failed (exit $status)" >&2
    exit "$status"
fi

python3 - "$out/clnet.json" "$out/pytorch.json" <<'EOF'
import json, os, sys
c = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else None
def row(r, extra=""):
    ms, dev, mem = r["milliseconds"], r.get("deviceMilliseconds"), r.get("peakMemoryBytes")
    dev_ms = f"{dev['median']:.1f}" if dev else "-"
    mib = str(mem >> 20) if mem else "-"
    return (f"{r['framework']:8} {r['imagesPerSecond']:10.1f} {ms['median']:10.1f} {ms['p10']:8.1f} {ms['p90']:8.1f} "
            f"{dev_ms:>10} {mib:>8}  {r['device']}{extra}")
print(f"{c['model']}, batch {c['batch']}, {c['size']}x{c['size']}, {c['mode']}")
print(f"{'':8} {'images/s':>10} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'device ms':>10} {'peak MiB':>8}  device")
print(row(c))
if p:
    print(row(p, f" (torch {p['versions']['torch']}, precision {p['precision']})"))
    print(f"CLNet / PyTorch images/s: {c['imagesPerSecond'] / p['imagesPerSecond']:.3f}")
peak = c["peak"]
print(f"\nCLNet device time by operation (peaks this run: GEMM {peak['gemmGFLOPS']:.1f} GFLOP/s, "
      f"copy {peak['copyGBPS']:.1f} GB/s):")
head = ("layers", "operation", "ms", "share", "GFLOP/s", "GB/s", "of GEMM", "of copy", "bound", "of roofline")
cells = lambda w: (w["name"], w["operation"], f"{w['milliseconds']:.2f}", f"{w['share'] * 100:.1f}%", f"{w['gflops']:.1f}",
                   f"{w['gbPerSecond']:.2f}", f"{w['gemmFraction']:.3f}", f"{w['copyFraction']:.3f}", w["bound"],
                   f"{w['rooflineFraction']:.3f}")
def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
table([head] + [cells(w) for w in c["byOperation"]])
top = int(os.environ.get("TOP", "10"))
if top > 0:
    print(f"\nCLNet's {top} slowest layers:")
    table([("layer",) + head[1:]] + [cells(w) for w in sorted(c["layers"], key=lambda w: -w["milliseconds"])[:top]])
EOF
