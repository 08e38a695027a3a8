#!/usr/bin/env bash
# One prepared GPU check: everything a short GPU lease should measure, into one folder.
#
#   bash scripts/gpu_check.sh [OUTDIR]        # default OUTDIR: build/gpu_check/
#   bash scripts/gpu_check.sh --dry-run       # CPU, seconds: every step's files, imports and
#                                             # arguments are checked and the plan printed
#
# Steps (each under `timeout`; the whole within GPU_CHECK_BUDGET seconds, default 540):
#   env      env.txt, env.json: GPU name and driver (nvidia-smi), torch, CUDA, bitsandbytes
#   pytest   pytest --device cuda on the core tests -> pytest_cuda.xml (junit), pytest_cuda.txt
#   nf4      scripts/gpu_nf4_check.py: our NF4 vs bitsandbytes' CUDA kernels, bit for bit,
#            and Linear4bit vs bitsandbytes.nn.Linear4bit -> nf4_check.json, nf4_check.txt
#   bench_train  benchmarks/bench_train.py --device cuda, a ~86M-parameter model in bf16:
#            tokens/s and MFU against the measured bf16 matmul peak -> bench_train.txt
#   bench_model  benchmarks/bench_model.py --device cuda: our training and decode tokens/s
#            against transformers with the same weights -> bench_model.txt
#   ch05 ch07 ch12 ch17  the full profile (MINILLAMA_PROFILE=full) of each chapter with
#            scripts/run_course.py -> notebooks/<chapter>.ipynb (executed), course_<ch>.txt
# Each step's exit status and wall time go to OUTDIR/summary.txt. A failed step does not
# stop the others; the script exits 1 if any step failed.
# GPU_CHECK_STEPS="env ch05 ch17" runs only the steps named (default: all), and
# GPU_CHECK_CHAPTERS="ch05 ch16" changes the chapters (default: ch05 ch07 ch12 ch17).
# Budget: profiles.py estimates ~1 + ~4 + ~2 + ~4.5 minutes for the four chapters' full
# profiles (unmeasured), more than one 10-minute lease holds after the other steps; a
# run that has the time splits it in two, e.g. the default run first, then
#   GPU_CHECK_STEPS="ch05 ch07 ch12 ch17" GPU_CHECK_BUDGET=560 bash scripts/gpu_check.sh
# (the full profile's live-trained models are kept under build/full/ between the two
# on the same machine; a fresh machine trains them again).
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python, python3).

set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0
OUT=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
                   exit 0 ;;
        -*) echo "gpu_check: unknown option $arg" >&2; exit 2 ;;
        *) OUT="$arg" ;;
    esac
done
OUT="${OUT:-build/gpu_check}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
    elif command -v python > /dev/null; then PYTHON=python
    else PYTHON=python3; fi
fi
BUDGET="${GPU_CHECK_BUDGET:-540}"
read -r -a CHAPTERS <<< "${GPU_CHECK_CHAPTERS:-ch05 ch07 ch12 ch17}"
ONLY="${GPU_CHECK_STEPS:-}"
for name in $ONLY; do
    case " env pytest nf4 bench_train bench_model ${CHAPTERS[*]} " in
        *" $name "*) ;;
        *) echo "gpu_check: GPU_CHECK_STEPS names no step '$name'; steps: env pytest nf4" \
                "bench_train bench_model ${CHAPTERS[*]}" >&2; exit 2 ;;
    esac
done
TESTS=(tests/test_model.py tests/test_hf_parity.py tests/test_peft.py tests/test_nf4.py
       tests/test_qlora.py tests/test_train.py tests/test_devices.py)

# ----------------------------------------------------------------------------- dry run
HELP_CHECK='
import contextlib, io, runpy, sys
wanted = {"scripts/gpu_nf4_check.py": ["--device", "--out"],
          "benchmarks/bench_train.py": ["--device", "--dim", "--n-layers", "--batch-size"],
          "benchmarks/bench_model.py": ["--device", "--config", "--rounds"],
          "scripts/run_course.py": ["--out", "--timeout"]}
bad = []
for path, options in wanted.items():
    sys.argv, text = [path, "--help"], io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        runpy.run_path(path, run_name="__main__")
    missing = [o for o in options if o not in text.getvalue()]
    if missing:
        bad.append(f"{path}: --help lacks {missing}")
import bitsandbytes.functional, bitsandbytes.nn    # gpu_nf4_check.py imports them lazily
import minillama.quant, peft, transformers          # the tests and bench_model.py need them
print("\n".join(bad))
sys.exit(1 if bad else 0)
'
if [ "$DRY_RUN" = 1 ]; then
    fail=0
    check() {   # check NAME COMMAND...: run quietly, report ok/FAIL
        local name="$1"; shift
        if out=$("$@" 2>&1); then echo "  ok    $name"
        else echo "  FAIL  $name"; echo "$out" | tail -5 | sed 's/^/        /'; fail=1; fi
    }
    echo "gpu_check plan (OUTDIR=$OUT, budget ${BUDGET} s, python $PYTHON${ONLY:+, only: $ONLY}):"
    echo "  1. env          nvidia-smi + versions -> env.txt, env.json              (timeout 60 s)"
    echo "  2. pytest       pytest --device cuda ${TESTS[*]}"
    echo "                  -> pytest_cuda.xml, pytest_cuda.txt                      (timeout 170 s)"
    echo "  3. nf4          scripts/gpu_nf4_check.py --device cuda -> nf4_check.json (timeout 90 s)"
    echo "  4. bench_train  benchmarks/bench_train.py --device cuda --dim 768 --n-layers 12"
    echo "                  --batch-size 32 --steps 20 -> bench_train.txt           (timeout 75 s)"
    echo "  5. bench_model  benchmarks/bench_model.py --device cuda --config base"
    echo "                  --rounds 2 -> bench_model.txt                            (timeout 75 s)"
    for ch in "${CHAPTERS[@]}"; do
        echo "  6. $ch         MINILLAMA_PROFILE=full scripts/run_course.py $ch --out $OUT/notebooks"
    done
    echo "                  (the rest of the budget, split between the chapters)"
    echo "  summary.txt: one line per step (status, exit code, seconds)"
    echo "checks:"
    for f in "${TESTS[@]}" tests/conftest.py scripts/gpu_nf4_check.py benchmarks/bench_train.py \
             benchmarks/bench_model.py scripts/run_course.py; do
        check "file $f" test -f "$f"
    done
    for ch in "${CHAPTERS[@]}"; do
        check "notebook $ch" bash -c "ls notebooks/${ch}*.ipynb"
    done
    for tool in timeout date; do check "command $tool" command -v "$tool"; done
    check "tests/conftest.py adds pytest's --device" grep -q 'addoption("--device"' tests/conftest.py
    # one interpreter parses every script's --help (importing each as it would run)
    check "imports, and --help of gpu_nf4_check.py, bench_train.py, bench_model.py, run_course.py" \
        "$PYTHON" -c "$HELP_CHECK"
    if [ "$fail" = 0 ]; then echo "dry run: ok"; else echo "dry run: FAILED"; fi
    exit "$fail"
fi

# ----------------------------------------------------------------------------- real run
mkdir -p "$OUT" "$OUT/notebooks"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
START=$(date +%s)
FAILED=0
{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "budget ${BUDGET} s; python $PYTHON"
    printf '%-12s %-7s %4s %8s\n' step status rc seconds
} > "$SUMMARY"

step() {    # step NAME LIMIT_S LOGFILE COMMAND...: run under timeout, log rc and wall time
    local name="$1" limit="$2" log="$3"; shift 3
    local t0 t1 rc status
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then      # not asked for
        printf '%-12s %-7s %4s %8s\n' "$name" "not run" - 0 >> "$SUMMARY"; return
    fi
    t0=$(date +%s%N)
    echo "=== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s%N)
    if [ "$rc" = 0 ]; then status=ok
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; FAILED=1
    else status=FAIL; FAILED=1; fi
    local ms=$(( (t1 - t0) / 1000000 ))
    printf '%-12s %-7s %4s %6d.%01d\n' "$name" "$status" "$rc" $(( ms / 1000 )) \
        $(( ms % 1000 / 100 )) >> "$SUMMARY"
    echo "=== $name: $status (rc $rc)"
}

env_step() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(hostname)"
        echo "nvidia-smi:"
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 \
            | sed 's/^/  /'
    } > "$OUT/env.txt"
    "$PYTHON" - "$OUT/env.json" >> "$OUT/env.txt" <<'EOF'
import json, platform, subprocess, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cuda_available": torch.cuda.is_available()}
for mod in ("bitsandbytes", "transformers", "peft", "numpy"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:                      # report, do not stop
        info[mod] = f"not importable: {e}"
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_count=torch.cuda.device_count(),
                gpu_memory_gib=round(p.total_memory / 2**30, 1),
                compute_capability=f"{p.major}.{p.minor}",
                bf16_supported=torch.cuda.is_bf16_supported())
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                        "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    info["driver"] = q.stdout.split(",")[-1].strip() if q.returncode == 0 else None
except Exception as e:
    info["nvidia_smi"] = f"not runnable: {e}"
json.dump(info, open(sys.argv[1], "w"), indent=1)
for k, v in info.items():
    print(f"{k}: {v}")
sys.exit(0 if info["cuda_available"] else 1)
EOF
}

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

export OUT PYTHON
export -f env_step
step env 60 "$OUT/env.log" bash -c env_step
step pytest 170 "$OUT/pytest_cuda.txt" "$PYTHON" -m pytest -p no:cacheprovider -q \
    --device cuda --junitxml="$OUT/pytest_cuda.xml" "${TESTS[@]}"
step nf4 90 "$OUT/nf4_check.txt" "$PYTHON" scripts/gpu_nf4_check.py --device cuda \
    --out "$OUT/nf4_check.json"
step bench_train 75 "$OUT/bench_train.txt" "$PYTHON" benchmarks/bench_train.py --device cuda \
    --dim 768 --n-layers 12 --batch-size 32 --steps 20
step bench_model 75 "$OUT/bench_model.txt" "$PYTHON" benchmarks/bench_model.py --device cuda \
    --config base --rounds 2
left=0
for ch in "${CHAPTERS[@]}"; do      # the chapters that will run share what is left
    if [ -z "$ONLY" ] || [[ " $ONLY " == *" $ch "* ]]; then left=$(( left + 1 )); fi
done
for ch in "${CHAPTERS[@]}"; do
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $ch "* ]]; then
        printf '%-12s %-7s %4s %8s\n' "$ch" "not run" - 0 >> "$SUMMARY"; continue
    fi
    share=$(( $(remaining) / left - 5 ))
    left=$(( left - 1 ))
    if [ "$share" -lt 30 ]; then
        printf '%-12s %-7s %4s %8s\n' "$ch" skipped - 0 >> "$SUMMARY"
        echo "=== $ch: skipped (budget spent)"; FAILED=1; continue
    fi
    # run_course's own per-notebook timeout ends the kernel first, so the executed copy
    # (up to the cell that ran out of time) is still written
    step "$ch" "$share" "$OUT/course_$ch.txt" env MINILLAMA_PROFILE=full "$PYTHON" \
        scripts/run_course.py "$ch" --out "$OUT/notebooks" --timeout $(( share - 15 ))
done

printf 'total %d s; %s\n' $(( $(date +%s) - START )) \
    "$([ "$FAILED" = 0 ] && echo 'all steps ok' || echo 'SOME STEPS FAILED')" >> "$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
