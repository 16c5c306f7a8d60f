#!/usr/bin/env bash
# Set up (or bring up to date) the project's virtual environment.
#
#   scripts/setup.sh runtime   what `qwenscribe` needs to run (no torch)
#   scripts/setup.sh dev       runtime + torch (CPU) + transformers + test tools
#
# Idempotent and quick when nothing changed: a stamp in the venv records a hash of the inputs.
# llama-cpp-python is compiled from source for this CPU's vector instructions (AVX2, AVX-512,
# VNNI, BF16; not AMX, whose path crashes: see below). The built wheel is cached per version and
# flags, so the 4-7 minute compile happens once per machine.
set -euo pipefail

mode=${1:-runtime}
case "$mode" in runtime|dev) ;; *) echo "usage: $0 [runtime|dev]" >&2; exit 2 ;; esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${QWENSCRIBE_VENV:-$root/.venv}
python=${PYTHON:-python3}
constraints=$root/constraints/cpu.txt
llama_version=$(sed -n 's/^llama-cpp-python==//p' "$constraints")
silero_version=$(sed -n 's/^silero-vad==//p' "$constraints")

# llama.cpp's CPU kernels: compiled for the instruction sets this CPU reports, named one by one
# (not -march=native) so the wheel cache below is keyed on them. AMX is left out: its path
# crashes on quantized models (src/qwenscribe/runtimes/cpu.py); QWENSCRIBE_LLAMA_AMX=1 adds it.
# QWENSCRIBE_LLAMA_CMAKE_ARGS replaces the whole choice (e.g. a portable build for an image).
llama_x86_args() {
  local flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) " args="-DGGML_NATIVE=OFF"
  has() { for flag in "$@"; do case "$flags" in *" $flag "*) ;; *) return 1 ;; esac; done; }
  if [ "$flags" = "  " ]; then  # no /proc/cpuinfo (macOS): the portable AVX2 set
    echo "$args -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    return
  fi
  has avx && args+=" -DGGML_AVX=ON"
  has avx2 && args+=" -DGGML_AVX2=ON"
  has fma && args+=" -DGGML_FMA=ON"
  has f16c && args+=" -DGGML_F16C=ON"
  has bmi2 && args+=" -DGGML_BMI2=ON"
  has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
  # ggml's AVX512 switch compiles for F, CD, VL, DQ and BW together.
  if has avx512f avx512cd avx512vl avx512dq avx512bw; then
    args+=" -DGGML_AVX512=ON"
    has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
    has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
    has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
    if [ "${QWENSCRIBE_LLAMA_AMX:-0}" = 1 ] && has amx_tile amx_int8; then
      args+=" -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON"
      has amx_bf16 && args+=" -DGGML_AMX_BF16=ON"
    fi
  fi
  echo "$args"
}
if [ -n "${QWENSCRIBE_LLAMA_CMAKE_ARGS:-}" ]; then
  llama_cmake_args=$QWENSCRIBE_LLAMA_CMAKE_ARGS
elif [ "$(uname -m)" = "x86_64" ]; then
  llama_cmake_args=$(llama_x86_args)
else
  llama_cmake_args="-DGGML_NATIVE=ON"
fi

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

"$python" - <<'PY' || { echo "qwenscribe needs Python 3.10 or newer (set PYTHON=...)." >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

stamp_inputs=$(cat "$root/pyproject.toml" "$constraints" "$root/scripts/setup.sh"; echo "$mode $llama_cmake_args")
stamp_hash=$(printf '%s' "$stamp_inputs" | sha256sum | cut -c1-16)
stamp=$venv/.qwenscribe-setup-$mode
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_hash" ] && [ -x "$venv/bin/qwenscribe" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip wheel

# llama-cpp-python: build once per (version, flags), keep the wheel, install it from there.
flags_hash=$(printf '%s' "$llama_version $llama_cmake_args $("$venv/bin/python" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-12)
wheel_cache=${QWENSCRIBE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qwenscribe/wheels}/llama-cpp-python-$llama_version-$flags_hash
if ! ls "$wheel_cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  say "compiling llama-cpp-python $llama_version (one time, several minutes)"
  mkdir -p "$wheel_cache.tmp"
  CMAKE_ARGS="$llama_cmake_args" "${pip[@]}" wheel -q --no-deps --no-cache-dir \
    -w "$wheel_cache.tmp" "llama-cpp-python==$llama_version"
  rm -rf "$wheel_cache" && mv "$wheel_cache.tmp" "$wheel_cache"
fi
# --force-reinstall: the same version built with other flags must replace the installed one.
"${pip[@]}" install -q --no-deps --force-reinstall "$wheel_cache"/llama_cpp_python-*.whl

target="$root"
[ "$mode" = dev ] && target="$root[dev]"
say "installing qwenscribe ($mode)"
"${pip[@]}" install -q -c "$constraints" -e "$target"
# Only silero-vad's bundled ONNX model is used; its own requirement on torch is not wanted.
"${pip[@]}" install -q --no-deps "silero-vad==$silero_version"

echo "$stamp_hash" > "$stamp"
say "ready: $venv"
