#!/bin/sh
# Compiles every ```c block of README.md that has a main() under the strict
# flags, runs it, and checks what it prints: the README's code cannot rot.
# A block on the POSIX loop (a server) is compiled only, and must be the
# example program of that name.
# Prints a greatest-style summary line.
build=${1:-build}/readme
mkdir -p "$build"
awk -v dir="$build" '/^```c$/ { n++; f = dir "/block" n ".c"; inblock = 1; next }
     /^```$/ { inblock = 0; next }
     inblock { print > f }' README.md
pass=0; fail=0
strict="-std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -Wstrict-prototypes \
-Wcast-qual -Wpointer-arith -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror"
for f in "$build"/block*.c; do
    [ -f "$f" ] || continue
    grep -q 'int main' "$f" || continue
    # A program on the POSIX loop is a server: compiled, not run, and it
    # must be one of examples/posix_*.c word for word (which make builds).
    if grep -q 'define WS_CHANNEL_POSIX' "$f"; then
        same=
        for e in examples/posix_*.c; do cmp -s "$f" "$e" && same=$e; done
        if [ -n "$same" ] && cc $strict -D_POSIX_C_SOURCE=200809L -I. -o "${f%.c}" "$f" 2> "${f%.c}.err"; then
            echo "ok   README block $(basename "$f") (= $same, compiled)"; pass=$((pass + 1))
        else
            echo "FAIL README block $(basename "$f"): not compiled, or not the same as an examples/posix_*.c"
            cat "${f%.c}.err" 2>/dev/null; fail=$((fail + 1))
        fi
        continue
    fi
    if cc $strict -fsanitize=address,undefined -I. -o "${f%.c}" "$f" 2> "${f%.c}.err" &&
       out=$("${f%.c}") && [ "$out" = "client got: hello" ]; then
        echo "ok   README block $(basename "$f")"; pass=$((pass + 1))
    else
        echo "FAIL README block $(basename "$f")"; cat "${f%.c}.err"; echo "output: $out"; fail=$((fail + 1))
    fi
done
echo "Pass: $pass, fail: $fail, skip: 0."
[ "$fail" -eq 0 ]
