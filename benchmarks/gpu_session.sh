#!/usr/bin/env bash
# The GPU measurements still open (issue 6 point 5: bench_finetune; issue 7 point 2: bench_extract
# >= 80 % of the model-only rate), ready for a session that is lent a GPU through the `device` tool.
#
# Here, once, from the repo root (needs ../shared beside the checkout and PyPI):
#     bash benchmarks/gpu_session.sh prepare
#   -> .whl/      wheels the GPU image lacks (zarr, pydantic and their needs; cp312, x86-64)
#      .gpu-data/ BreastMNIST + kermany_cxr_224 copied from ../shared/data (the GPU machine cannot see it)
#   Both are listed in .git/info/exclude, so they never reach a commit; together about 50 MiB.
# There (device tool): run(command="bash benchmarks/gpu_session.sh run", carry=[".whl", ".gpu-data"])
#   -> $OUT/device.txt, gpu-tests.log, bench_extract.log, bench_finetune.log
# Then copy the numbers, with the device named, into benchmarks/README.md and README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local exclude; exclude="$(git rev-parse --git-path info/exclude)"
    for d in .whl .gpu-data; do
        grep -qx "/$d/" "$exclude" 2>/dev/null || echo "/$d/" >> "$exclude"
        mkdir -p "$d"
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
        pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    cp ../shared/data/breastmnist.npz .gpu-data/
    cp -r ../shared/data/kermany_cxr_224 .gpu-data/
    du -sh .whl .gpu-data
}

run() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" MEDFM_DATA="$PWD/.gpu-data" MEDFM_CACHE=/tmp/medfm-cache PYTHONUNBUFFERED=1
    out="${OUT:-/tmp/medfm-gpu-out}"; mkdir -p "$out"
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
        | tee "$out/device.txt"
    python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$out/gpu-tests.log" || true
    python3 benchmarks/bench_extract.py --backbone dinov2_vitb14 --img-size 224 --dataset kermany_cxr_224 --repeat 8 \
        --pixels prepare --batch-size auto --naive-images 256 2>&1 | tee "$out/bench_extract.log" || true
    python3 benchmarks/bench_finetune.py --backbone dinov2_vitb14 --img-size 224 2>&1 | tee "$out/bench_finetune.log" || true
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_session.sh prepare|run" >&2; exit 2 ;;
esac
