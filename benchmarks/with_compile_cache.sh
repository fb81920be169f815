#!/usr/bin/env bash
# Runs a lease's command with the compilers' caches of the last lease (benchmarks/compile_cache.py): restores the
# parts in .compile_cache/ (carried with the call: carry [".compile_cache"]), points Triton and Inductor at the
# restored folder, runs the command, then packs the folder into $OUT (at most three 15 MiB parts) for the next
# call. Copy those parts into .compile_cache/ here before the next call. Without parts it compiles as before.
# Before a lease's first call, benchmarks/precompile.py compiles here, on CPU, the kernels the lease will launch
# into the same folder (/tmp/effnet_compile_cache), which compile_cache.py then packs into .compile_cache/.
#     OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh 520
OUT=${OUT:-gpu_lease_out}
CACHE=${EFFNET_COMPILE_CACHE:-/tmp/effnet_compile_cache}
python3 benchmarks/compile_cache.py unpack .compile_cache "$CACHE"
export TRITON_CACHE_DIR="$CACHE/triton" TORCHINDUCTOR_CACHE_DIR="$CACHE/inductor"
"$@"
status=$?
python3 benchmarks/compile_cache.py pack "$CACHE" "$OUT"
exit $status
