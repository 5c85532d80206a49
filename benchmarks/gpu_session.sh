#!/usr/bin/env bash
# The GPU measurements still open (issue 6 point 5: bench_finetune; issue 7 point 2: bench_extract
# >= 80 % of the model-only rate), ready for a session that is lent a GPU through the `device` tool.
#
# Here, once, from the repo root (needs ../shared beside the checkout and PyPI):
#     bash benchmarks/gpu_session.sh prepare
#   -> .whl/       wheels the GPU image lacks (zarr, pydantic and their needs; cp312, x86-64)
#      .gpu-data/  BreastMNIST + kermany_cxr_224 copied from ../shared/data (the GPU machine cannot see it)
#      .gpu-exact/ BreastMNIST + the shared DINOv2-S weights as fp16 (44 MB; they load into the fp32 model)
#   All are listed in .git/info/exclude, so they never reach a commit. A carry holds 64 MiB, so the two
#   stages carry different folders.
# There (device tool): run(command="bash benchmarks/gpu_session.sh run", carry=[".whl", ".gpu-data"])
#   -> $OUT/device.txt, gpu-tests.log, bench_extract.log, bench_finetune.log
# A later call, or session (issue 17 point 3, the DINOv2-S x BreastMNIST exact-vs-fast pair):
#   run(command="bash benchmarks/gpu_session.sh exact", carry=[".whl", ".gpu-exact"])
#   -> $OUT/device.txt, exact_vs_fast.log (the README table rows), exact_vs_fast.csv, logs/
# Then copy the numbers, with the device named, into benchmarks/README.md and README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local exclude; exclude="$(git rev-parse --git-path info/exclude)"
    for d in .whl .gpu-data .gpu-exact; do
        grep -qx "/$d/" "$exclude" 2>/dev/null || echo "/$d/" >> "$exclude"
        mkdir -p "$d"
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
        pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    cp ../shared/data/breastmnist.npz .gpu-data/
    cp -r ../shared/data/kermany_cxr_224 .gpu-data/
    cp ../shared/data/breastmnist.npz .gpu-exact/
    python3 -c "import sys, safetensors.torch as st; st.save_file({k: v.half().contiguous() for k, v in st.load_file(sys.argv[1]).items()}, sys.argv[2])" \
        ../shared/weights/dinov2_vits14_imgfocus_timm.safetensors .gpu-exact/dinov2_vits14_fp16.safetensors
    du -sh .whl .gpu-data .gpu-exact
}

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" MEDFM_CACHE=/tmp/medfm-cache PYTHONUNBUFFERED=1
    out="${OUT:-/tmp/medfm-gpu-out}"; mkdir -p "$out"
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
        | tee "$out/device.txt"
}

# The three rows of the pair (fast crop, fast squash + dataset statistics, exact) all run here, with the
# same fp16-rounded weights, so the pair is self-consistent; its numbers are not the CPU rows' numbers.
exact() {
    setup
    export MEDFM_DATA="$PWD/.gpu-exact"
    python3 benchmarks/exact_vs_fast.py --store /tmp/x17 --backbones dinov2_vits14 --datasets breastmnist --jobs 1 \
        --weights "dinov2_vits14=$PWD/.gpu-exact/dinov2_vits14_fp16.safetensors" 2>&1 | tee "$out/exact_vs_fast.log" || true
    cp /tmp/x17/report/exact_vs_fast.csv "$out/" 2>/dev/null || true
    cp -r /tmp/x17/logs "$out/" || true
}

run() {
    setup
    export MEDFM_DATA="$PWD/.gpu-data"
    python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$out/gpu-tests.log" || true
    python3 benchmarks/bench_extract.py --backbone dinov2_vitb14 --img-size 224 --dataset kermany_cxr_224 --repeat 8 \
        --pixels prepare --batch-size auto --naive-images 256 2>&1 | tee "$out/bench_extract.log" || true
    python3 benchmarks/bench_finetune.py --backbone dinov2_vitb14 --img-size 224 2>&1 | tee "$out/bench_finetune.log" || true
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    exact) exact ;;
    *) echo "usage: bash benchmarks/gpu_session.sh prepare|run|exact" >&2; exit 2 ;;
esac
