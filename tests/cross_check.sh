#!/bin/sh
# Every unit suite on another CPU: cross-built with Debian's gcc, linked
# -static (so qemu-user needs no sysroot) and run under qemu-user.
#   tests/cross_check.sh BUILD TARGET [SUITE...]    (from anywhere)
# TARGET is one of
#   aarch64  little-endian, NEON: every suite as built for AArch64 (NEON
#            paths), the layers with SIMD paths once more with
#            -DWSCH_NO_SIMD, and tests/simd_check.sh: NEON = scalar
#   s390x    big-endian, 64-bit
#   i386     32-bit x86 (i686: the scalar paths), plus test_simd built with
#            -msse2 against the scalar i386 build (SSE2 with 32-bit sizes);
#            run natively when the kernel runs 32-bit programs, else qemu-i386
# aarch64 and s390x make char unsigned, x86 signed: between them and the
# native run both signednesses are covered.
# SUITE names (e.g. test_simd) restrict the run to those suites.
# Binaries go to BUILD/cross/TARGET, rebuilt only when older than their
# sources. Prints a line per program and one closing line
# "Pass: N, fail: N, skip: N." with the sum of greatest's counts. A missing
# toolchain or qemu: a skip (a line "SKIP: ..." says what to install), or a
# failure under CI=true, where tests/packages.txt has been installed.
# CROSS_JOBS (default 2) compilers run at a time.
cd "$(dirname "$0")/.." || exit 1
build=${1:-build}; target=$2
shift 2 2>/dev/null || shift $#
warn="-std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -Wstrict-prototypes \
-Wmissing-prototypes -Wcast-qual -Wpointer-arith -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror"
defs="-DGREATEST_HEADER=\"$(pwd)/tests/greatest.h\" -D_GNU_SOURCE"
jobs=${CROSS_JOBS:-2}
passed=0; failed=0

summary() { echo "Pass: $1, fail: $2, skip: $3."; [ "$2" -eq 0 ]; exit $?; }
skip_all() {
    echo "SKIP: $target: $1"
    [ -n "$CI" ] && summary 0 1 0
    summary 0 0 1
}

case $target in
aarch64) triple=aarch64-linux-gnu; qemu=qemu-aarch64; pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
s390x) triple=s390x-linux-gnu; qemu=qemu-s390x; pkgs="gcc-s390x-linux-gnu libc6-dev-s390x-cross" ;;
i386) triple=i686-linux-gnu; qemu=qemu-i386; pkgs="gcc-i686-linux-gnu libc6-dev-i386-cross" ;;
*) echo "cross_check: unknown target '$target' (aarch64, s390x, i386)"; summary 0 1 0 ;;
esac
cc=$triple-gcc
command -v "$cc" >/dev/null 2>&1 || skip_all "$cc is missing (apt-get install $pkgs qemu-user)"
dir=$build/cross/$target
mkdir -p "$dir" || summary 0 1 0

# Builds the same way as the Makefile's $(BUILD)/test/% rule, plus -static.
# build OUTPUT SOURCE FLAGS...: skipped when OUTPUT is newer than its inputs.
errors=$dir/build-errors.txt
: > "$errors"
build_one() {
    out=$1; src=$2; shift 2
    for dep in "$src" ws_channel.h tests/*.h; do
        [ "$out" -nt "$dep" ] || { stale=1; break; }
        stale=
    done
    [ -z "$stale" ] && return 0
    if ! "$cc" $warn -O2 -static "$@" $defs -I. -Itests -o "$out.tmp" "$src" -lm > "$out.log" 2>&1; then
        { echo "build failed: $out"; cat "$out.log"; } >> "$errors"
        rm -f "$out.tmp" "$out"    # never run a binary older than the source
        return 1
    fi
    mv -f "$out.tmp" "$out"
}

# The suites that link zlib have no cross zlib installed: they run natively only.
suites=$(echo ${*:-$(ls tests/test_*.c | sed 's|tests/||; s|\.c$||' | grep -v '^test_zlib_codec$\|^test_deflate$')})

nosimd=
for t in $(sed -n 's/^NOSIMD_TESTS *:= *//p' Makefile); do
    case " $suites " in *" $t "*) nosimd="$nosimd $t" ;; esac
done
n=0
queue() { # OUTPUT SOURCE FLAGS...: at most $jobs compilers at once
    build_one "$@" &
    n=$((n + 1))
    [ $((n % jobs)) -eq 0 ] && wait
}
for t in $suites; do queue "$dir/$t" "tests/$t.c"; done
if [ "$target" = aarch64 ]; then
    for t in $nosimd; do queue "$dir/$t.nosimd" "tests/$t.c" -DWSCH_NO_SIMD; done
fi
case " $suites " in *" test_simd "*) simd=1 ;; *) simd= ;; esac
[ "$target" = i386 ] && [ -n "$simd" ] && queue "$dir/test_simd.sse2" tests/test_simd.c -msse2
wait
cat "$errors"

# How to run: qemu, or natively for i386 when this kernel runs it.
runner=$qemu
first=$(echo $suites | cut -d' ' -f1)
if [ "$target" = i386 ] && [ -x "$dir/$first" ] && "$dir/$first" >/dev/null 2>&1; then
    runner=
fi
if [ -n "$runner" ] && ! command -v "$runner" >/dev/null 2>&1; then
    skip_all "$runner is missing (apt-get install qemu-user)"
fi

# run NAME COMMAND...: adds the program's greatest counts; a program that
# is missing or ends without a summary counts as one failure.
run() {
    name=$1; shift
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" > "$dir/$(echo "$name" | tr ' :=/' '____').out"
    line=$(printf '%s\n' "$out" | grep -E '^Pass: [0-9]+, fail: [0-9]+' | tail -n 1)
    if [ -z "$line" ]; then
        echo "$target $name: FAIL, no summary (exit $rc)"; printf '%s\n' "$out" | tail -n 10
        failed=$((failed + 1)); return
    fi
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)); failed=$((failed + f))
    echo "$target $name: $p passed, $f failed"
    [ "$f" -ne 0 ] && printf '%s\n' "$out" | grep -E 'FAIL|Expected|Got|ERROR' | head -n 20
}
for t in $suites; do run "$t" $runner "$dir/$t"; done
if [ "$target" = aarch64 ]; then
    for t in $nosimd; do run "$t (scalar)" $runner "$dir/$t.nosimd"; done
    [ -n "$simd" ] && run "test_simd: NEON = scalar" sh tests/simd_check.sh "$dir/test_simd" "$dir/test_simd.nosimd" $runner
fi
if [ "$target" = i386 ] && [ -n "$simd" ]; then
    run "test_simd: SSE2 = scalar" sh tests/simd_check.sh "$dir/test_simd.sse2" "$dir/test_simd" $runner
fi
echo "$target: run ${runner:-natively}"
summary "$passed" "$failed" 0
