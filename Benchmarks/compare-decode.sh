#!/usr/bin/env bash
# Image decoding throughput of CLNet (libjpeg-turbo, libpng, its PIL-exact resize) beside PIL's,
# in one run on the same machine:
#   Benchmarks/compare-decode.sh [FOLDER] [TRANSFORM]
# FOLDER defaults to 200 ImageNet-sized JPEGs made by Benchmarks/make_jpegs.py in a temporary
# folder; TRANSFORM is none (decode only, the default), train or eval. WORKERS (default 1,2) sets
# the thread / process counts. CLNET_BENCH as in compare.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
transform=${2:-none} workers=${WORKERS:-1,2}
if [ -z "${CLNET_BENCH:-}" ]; then
    CLNET_BENCH=.build/release/clnet-bench
    [ -x "$CLNET_BENCH" ] || swift build -c release --product clnet-bench >&2
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
folder=${1:-}
if [ -z "$folder" ]; then
    folder=$out/images
    python3 Benchmarks/make_jpegs.py "$folder" 200 >&2
fi
# shellcheck disable=SC2086 # CLNET_BENCH may be a command with arguments
$CLNET_BENCH decode --folder "$folder" --workers "$workers" --transform "$transform" --json > "$out/clnet.json"
python3 Benchmarks/decode_pil.py --folder "$folder" --workers "$workers" --transform "$transform" --json > "$out/pil.json"
python3 - "$out/clnet.json" "$out/pil.json" <<'PY'
import json, sys
clnet, pil = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{clnet['rows'][0]['images']} images, transform {clnet['transform']}")
print(f"{'workers':>8} {'CLNet img/s':>12} {'PIL img/s':>10} {'CLNet / PIL':>12}")
for c, p in zip(clnet["rows"], pil["rows"]):
    print(f"{c['workers']:>8} {c['imagesPerSecond']:>12.1f} {p['images_per_second']:>10.1f} {c['imagesPerSecond'] / p['images_per_second']:>12.2f}")
PY
