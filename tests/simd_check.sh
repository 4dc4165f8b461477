#!/bin/sh
# SIMD and scalar give the same results: runs the scalar build of
# tests/test_simd.c (built with -DWSCH_NO_SIMD), then the SIMD build with the
# scalar build's digest in WSCH_SCALAR_DIGEST, which it checks against its
# own. Usage: tests/simd_check.sh SIMD_BINARY SCALAR_BINARY [RUNNER...]
# (RUNNER: e.g. qemu-aarch64 for a cross build). Prints both programs'
# output; the last line is greatest's summary of the two runs together.
simd=$1; scalar=$2; shift 2
out=$("$@" "$scalar" 2>&1); rc=$?
printf '%s\n' "$out"
digest=$(printf '%s\n' "$out" | sed -n 's/^digest: \([0-9a-f]*\) .*/\1/p' | tail -n 1)
line=$(printf '%s\n' "$out" | grep -E '^Pass: [0-9]+, fail: [0-9]+' | tail -n 1)
p1=$(echo "$line" | sed -nE 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/p'); p1=${p1:-0}
f1=$(echo "$line" | sed -nE 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/p'); f1=${f1:-1}
[ "$rc" -ne 0 ] && [ "$f1" -eq 0 ] && f1=1
[ -n "$digest" ] || { echo "simd_check: no digest from $scalar"; f1=$((f1 + 1)); }
# An empty digest still reaches the SIMD build, whose check then fails.
out=$(WSCH_SCALAR_DIGEST=$digest "$@" "$simd" 2>&1); rc=$?
printf '%s\n' "$out"
line=$(printf '%s\n' "$out" | grep -E '^Pass: [0-9]+, fail: [0-9]+' | tail -n 1)
p2=$(echo "$line" | sed -nE 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/p'); p2=${p2:-0}
f2=$(echo "$line" | sed -nE 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/p'); f2=${f2:-1}
[ "$rc" -ne 0 ] && [ "$f2" -eq 0 ] && f2=1
echo "Pass: $((p1 + p2)), fail: $((f1 + f2)), skip: 0."
[ $((f1 + f2)) -eq 0 ]
