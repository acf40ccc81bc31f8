#!/usr/bin/env bash
# Every GPU check in one script, for a CUDA machine without internet whose python3 has torch with
# CUDA, numba, h5py, xarray, pandas, matplotlib, seaborn, tqdm, psutil and pytest, but not dask,
# distributed, h5netcdf, hdf5plugin or blosc: those travel as wheels in .whl/ (made here, with
# internet, by `bash benchmarks/gpu.sh --fetch-wheels`; .whl/ is ignored through .git/info/exclude).
#
#   bash benchmarks/gpu.sh                  on the GPU machine, from the repository root
#   bash benchmarks/gpu.sh --fetch-wheels   here: download the wheels into .whl/ (about 9 MiB)
#
# In order, each section printing a header and its wall-clock and going on when it fails:
#   0. the wheels installed into /tmp/site (PYTHONPATH=/tmp/site:$PWD; no install of the project);
#   1. GPU name and memory, python3, torch and numba versions;
#   2. every CUDA test of the suite (pytest -k cuda);
#   3. paper-scale bench of bptt, eprop, mdgl on run.core = torch and = cuda_graph, and the
#      plain-autograd reference bptt_autograd once;
#   4. bptt at N = 800 (400 LIF + 400 ALIF) with each core;
#   5. one recorded iteration (record_list);
#   6. a short Fig. 3C sweep on CUDA (10 iterations, recording the last one of 4 trials), then
#      `mdgl verify` on one of its runs;
#   7. (only with MDGL_SECTIONS="0 7") bptt and mdgl at N = 100, 400, 1600 on each core.
# Logs go to ${OUT:-/tmp/gpu-out} (8 files at most); the exit status is the number of sections
# that failed; one python3 command stops after MDGL_LIMIT seconds (240). About 5 minutes on an
# H200 (sections 0-6 took 4 min 41 s there on 2026-12-04).
#
# For a check of this script's logic on a CPU: MDGL_PY=.venv/bin/python MDGL_DEVICE=cpu
# MDGL_SMOKE=1 bash benchmarks/gpu.sh (tiny batches; the cuda_graph cases then fail, by design).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

# --------------------------------------------------------------------------------------------
# the wheels (run here, where pip reaches the package index)
WHEELS=(
    dask==2026.8.0 distributed==2026.8.0 h5netcdf==1.8.3 hdf5plugin==7.1.0 blosc==1.11.4
    partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0 tornado==6.6.1
)

fetch_wheels() {
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 -d .whl "${WHEELS[@]}" ||
        return 1
    # hdf5plugin's wheel is 46 MiB, 40 of them compressors the records never use (SZ3 alone is
    # 99 MB unpacked): keep the blosc filter the records are written with (and the small lz4 and
    # bzip2 ones), as a build of hdf5plugin with only those filters embedded, version 7.1.0+blosc
    python3 - <<'EOF'
import base64, glob, hashlib, os, re, zipfile

(src,) = [w for w in glob.glob(".whl/hdf5plugin-7.1.0-*.whl")]
keep = ("blosc", "bzip2", "lz4")
dst = src.replace("hdf5plugin-7.1.0-", "hdf5plugin-7.1.0+blosc-")
old_info, new_info = "hdf5plugin-7.1.0.dist-info/", "hdf5plugin-7.1.0+blosc.dist-info/"
files = {}
with zipfile.ZipFile(src) as z:
    for item in z.infolist():
        name, data = item.filename, z.read(item)
        plugin = re.fullmatch(r"hdf5plugin/plugins/libh5([a-z0-9]+?)\.so", name)
        if plugin and plugin.group(1) not in keep:
            continue
        if name == "hdf5plugin/_config.py":
            data = re.sub(rb"'embedded_filters': \([^)]*\)",
                          repr({"embedded_filters": keep})[1:-1].encode(), data)
            assert b"'sz3'" not in data, "embedded_filters not found in _config.py"
        if name == old_info + "METADATA":
            data = data.replace(b"\nVersion: 7.1.0\n", b"\nVersion: 7.1.0+blosc\n")
        if name.endswith("RECORD"):
            continue
        files[name.replace(old_info, new_info)] = (item, data)

def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

record = "".join(f"{n},sha256={digest(d)},{len(d)}\n" for n, (_, d) in files.items())
record += f"{new_info}RECORD,,\n"
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
    for name, (item, data) in files.items():
        info = zipfile.ZipInfo(name, item.date_time)
        info.external_attr, info.compress_type = item.external_attr, zipfile.ZIP_DEFLATED
        z.writestr(info, data)
    z.writestr(zipfile.ZipInfo(new_info + "RECORD", (2026, 1, 1, 0, 0, 0)), record)
os.remove(src)
print(f"{dst}: {os.path.getsize(dst) / 2**20:.1f} MiB")
EOF
    du -sh .whl
}

if [ "${1:-}" = "--fetch-wheels" ]; then
    fetch_wheels
    exit
fi

# --------------------------------------------------------------------------------------------
# the checks (on the GPU machine)
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
PY=${MDGL_PY:-python3}
DEVICE=${MDGL_DEVICE:-cuda}
SMOKE=()  # tiny settings for a check of this script on a CPU
if [ "${MDGL_SMOKE:-0}" = 1 ]; then
    SMOKE=(--set train.batch=4 --set train.val_batch=4)
fi
SUMMARY=$OUT/summary.txt
FAILED=0
export PYTHONUNBUFFERED=1

# microseconds since the epoch
now_us() {
    local t=${EPOCHREALTIME:-}
    if [ -n "$t" ]; then echo "${t/[.,]/}"; else echo "$(date +%s)000000"; fi
}

# section TITLE LOG FUNCTION: run FUNCTION in this shell (its exports stay), its output shown
# and appended to $OUT/LOG; a header before, the exit status and wall-clock after
section() {
    local title=$1 log=$OUT/$2 fn=$3 t0 rc us
    printf '\n===== %s =====\n' "$title" | tee -a "$SUMMARY" "$log"
    t0=$(now_us)
    "$fn" > >(tee -a "$log") 2>&1
    rc=$?
    wait $! 2>/dev/null  # the tee of the process substitution
    us=$(($(now_us) - t0))
    printf '===== %s: exit %s, %d.%d s =====\n' "$title" "$rc" $((us / 1000000)) \
        $((us / 100000 % 10)) | tee -a "$SUMMARY" "$log"
    [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
}

# every python3 command stops after MDGL_LIMIT seconds (240): a hang costs one section, not all
py() { timeout --kill-after=10 "${MDGL_LIMIT:-240}" "$PY" "$@"; }
mdgl() { py -m mdgl_analysis "$@"; }

# the wheels into /tmp/site, the checkout on the path, and the presets package (runs/configs,
# which an install maps to mdgl_analysis.presets) as a link that goes again at exit
setup() {
    local status=0
    export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    if [ "${MDGL_SMOKE:-0}" = 1 ]; then
        echo "MDGL_SMOKE: no wheels, the packages of $PY"
    elif compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || status=1
    else
        echo "no .whl/*.whl (bash benchmarks/gpu.sh --fetch-wheels, and carry .whl)"
        status=1
    fi
    if [ ! -e mdgl_analysis/presets ]; then
        ln -s ../runs/configs mdgl_analysis/presets || status=1
        trap 'rm -f "$ROOT/mdgl_analysis/presets"' EXIT
    fi
    return $status
}

environment() {
    local status=0
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || status=1
    "$PY" --version
    py -c "import torch, numba, dask, h5netcdf, hdf5plugin, mdgl_analysis.config as c
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('numba', numba.__version__, 'dask', dask.__version__, 'h5netcdf', h5netcdf.__version__,
      'hdf5plugin', hdf5plugin.version)
print('mdgl_analysis from', c.__file__, 'presets', ', '.join(c.PRESETS))" || status=1
    return $status
}

cuda_tests() {
    py -m pytest -q -p no:cacheprovider tests -k cuda
}

bench_paper() {
    local status=0
    mdgl bench --device "$DEVICE" --threads 1 --iterations 10 --rules bptt,eprop,mdgl,bptt_autograd \
        --set run.core=torch ${SMOKE[@]+"${SMOKE[@]}"} || status=1
    mdgl bench --device "$DEVICE" --threads 1 --iterations 10 --rules bptt,eprop,mdgl \
        --set run.core=cuda_graph ${SMOKE[@]+"${SMOKE[@]}"} || status=1
    return $status
}

bench_n800() {
    local status=0 core
    for core in torch cuda_graph; do
        echo "run.core = $core"
        mdgl bench --device "$DEVICE" --threads 1 --iterations 10 --rules bptt \
            --set network.n_regular=400 --set network.n_adaptive=400 --set run.core=$core \
            ${SMOKE[@]+"${SMOKE[@]}"} || status=1
    done
    return $status
}

bench_record() {
    mdgl bench --device "$DEVICE" --threads 1 --iterations 1 --rules record_list ${SMOKE[@]+"${SMOKE[@]}"}
}

sweep() {
    rm -rf /tmp/gpu-sweep
    mdgl sweep runs/configs/fig3c.toml --rules bptt,eprop,mdgl --seeds 1 --iterations 10 \
        --set run.device="$DEVICE" --set record.iterations=last --set record.trials=0-3 \
        ${SMOKE[@]+"${SMOKE[@]}"} --jobs 1 --out /tmp/gpu-sweep || return 1
    cp /tmp/gpu-sweep/sweep.json "$OUT/sweep.json"
    mdgl verify /tmp/gpu-sweep/mdgl-s1
}

scaling() {
    mdgl bench --device "$DEVICE" --threads 1 --iterations 5 --rules bptt,mdgl \
        --cores torch,cuda_graph --scaling n=100,400,1600 --out "$OUT/scaling_n.jsonl" \
        ${SMOKE[@]+"${SMOKE[@]}"}
}

# MDGL_SECTIONS picks sections (default 0-6; 7, the network-size scaling on each core, on request:
# MDGL_SECTIONS="0 7")
SECTIONS=" ${MDGL_SECTIONS:-0 1 2 3 4 5 6} "
run_section() { [[ $SECTIONS == *" $1 "* ]] && section "${@:2}"; }
run_section 0 "0. wheels and the presets package" 1-environment.log setup
run_section 1 "1. machine and versions" 1-environment.log environment
run_section 2 "2. CUDA tests (pytest -k cuda)" 2-cuda-tests.log cuda_tests
run_section 3 "3. paper-scale bench: run.core = torch, then cuda_graph" 3-bench-paper.log bench_paper
run_section 4 "4. N = 800: bptt with each core" 4-bench-n800.log bench_n800
run_section 5 "5. one recorded iteration" 5-record.log bench_record
run_section 6 "6. Fig. 3C sweep, 10 iterations, then mdgl verify" 6-sweep.log sweep
run_section 7 "7. network size on each core: N = 100, 400, 1600" 7-scaling.log scaling
printf '\n%s section(s) failed; logs in %s\n' "$FAILED" "$OUT" | tee -a "$SUMMARY"
exit "$FAILED"
