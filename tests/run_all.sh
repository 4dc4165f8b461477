#!/bin/sh
# Runs every unit test binary (plain, sanitized, scalar, char of the other
# signedness), the cross runs, then the interop tests,
# and prints the closing line "N passed, N failed". Each program prints
# greatest's summary line "Pass: N, fail: N, skip: N."; a program that dies
# without one counts as one failure.
build=$1; shift
passed=0; failed=0
log=$build/test-log.txt
: > "$log"
count() { # name, command...
    name=$1; shift
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" >> "$log"
    line=$(printf '%s\n' "$out" | grep -E '^Pass: [0-9]+, fail: [0-9]+' | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $name: no summary (exit $rc)"; printf '%s\n' "$out" | tail -n 20
        failed=$((failed + 1)); return
    fi
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
    s=$(echo "$line" | sed -nE 's/.*skip: ([0-9]+).*/\1/p')
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)); failed=$((failed + f))
    if [ "${s:-0}" -ne 0 ]; then
        echo "$name: $p passed, $f failed, $s skipped"
        printf '%s\n' "$out" | grep -E '^SKIP' | head -n 5
    else
        echo "$name: $p passed, $f failed"
    fi
    [ "$f" -ne 0 ] && printf '%s\n' "$out" | grep -E 'FAIL|Expected|Got|ERROR|runtime error' | head -n 30
}
for t in "$@"; do
    count "$t" "$build/test/$t"
    count "$t (asan+ubsan)" "$build/asan/$t"
    [ -x "$build/nosimd/$t" ] && count "$t (scalar, asan+ubsan)" "$build/nosimd/$t"
    [ -x "$build/char/$t" ] && count "$t (char of the other signedness)" "$build/char/$t"
done
# The SIMD build and the scalar build give the same results (tests/test_simd.c).
[ -x "$build/nosimd/test_simd" ] &&
    count "test_simd: SIMD = scalar" sh tests/simd_check.sh "$build/test/test_simd" "$build/nosimd/test_simd"
# Every suite cross-built and run under qemu-user (tests/cross_check.sh):
# little-endian with NEON, big-endian, 32-bit.
for target in aarch64 s390x i386; do
    count "cross $target (all suites)" sh tests/cross_check.sh "$build" "$target"
done
count "README code" sh tests/readme_check.sh "$build"
count "header quick starts" sh tests/quickstart_check.sh "$build"
# Every fuzz corpus and crash reproducer, replayed under ASan+UBSan.
[ -f fuzz/replay.sh ] && count "fuzz corpora (asan+ubsan)" sh fuzz/replay.sh "$build/fuzz/replay"
for s in tests/interop/run_*.sh; do
    [ -f "$s" ] || continue
    count "$(basename "$s" .sh)" sh "$s" "$build"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
