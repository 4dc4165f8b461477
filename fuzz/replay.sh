#!/bin/sh
# Replays every fuzz corpus file (corpus/TARGET/*) and crash reproducer
# (regressions/TARGET/*) through its target, built as a plain program with
# ASan+UBSan (no libFuzzer needed). Usage: fuzz/replay.sh [BUILD_DIR]
# Prints one line per target and, last, "Pass: N, fail: N, skip: N." where N
# counts files (skip: files of a target whose layer is not in the header).
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$root/build/fuzz/replay}
cc=${CC:-cc}
mkdir -p "$out" || exit 1
warn="-std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -Wstrict-prototypes
 -Wmissing-prototypes -Wcast-qual -Wpointer-arith -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror"
san="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS
pass=0; fail=0; skip=0

files_of() { # target -> corpus and regression files, one per line
    for d in "$here/corpus/$1" "$here/regressions/$1"; do
        [ -d "$d" ] && find "$d" -type f | sort
    done
}

libs() { # target -> the libraries it links beyond libc
    case $1 in
        fuzz_deflate) echo -lz ;;
    esac
}

needs() { # target -> a function its layer must declare, or empty
    case $1 in
        fuzz_client) echo wsch_client_create ;;
        fuzz_hub) echo wsch_hub_create ;;
    esac
}

for src in "$here"/fuzz_*.c; do
    t=$(basename "$src" .c)
    list=$(files_of "$t")
    n=$(printf '%s\n' "$list" | grep -c .)
    fn=$(needs "$t")
    if [ -n "$fn" ] && ! grep -q "$fn" "$root/ws_channel.h"; then
        echo "$t: skipped ($n files): $fn is not in ws_channel.h yet"
        skip=$((skip + n)); continue
    fi
    if [ "$t" = fuzz_deflate ] && ! printf '#include <zlib.h>\n' | $cc -E -x c - >/dev/null 2>&1; then
        echo "$t: skipped ($n files): zlib is not installed (Debian: zlib1g-dev)"
        skip=$((skip + n)); continue
    fi
    # shellcheck disable=SC2086
    if ! $cc $warn $san -D_GNU_SOURCE -I"$root" -I"$here" -o "$out/$t" "$src" "$here/replay_main.c" $(libs "$t") \
            > "$out/$t.build.log" 2>&1; then
        echo "$t: FAIL: does not build"; head -n 20 "$out/$t.build.log"
        fail=$((fail + n)); continue
    fi
    [ "$n" -eq 0 ] && { echo "$t: no corpus files"; continue; }
    # All files in one process; if anything fails, once more file by file to name them.
    # shellcheck disable=SC2086
    if printf '%s\n' "$list" | tr '\n' '\0' | xargs -0 "$out/$t" > "$out/$t.log" 2>&1; then
        pass=$((pass + n)); echo "$t: $n passed, 0 failed"; continue
    fi
    p=0; f=0
    for file in $list; do
        if "$out/$t" "$file" > "$out/$t.one.log" 2>&1; then
            p=$((p + 1))
        else
            f=$((f + 1)); echo "FAIL $t $file"
            grep -E 'fuzz check failed|ERROR: |runtime error|SUMMARY' "$out/$t.one.log" | head -n 5
        fi
    done
    pass=$((pass + p)); fail=$((fail + f))
    echo "$t: $p passed, $f failed"
done
echo "Pass: $pass, fail: $fail, skip: $skip."
[ "$fail" -eq 0 ]
