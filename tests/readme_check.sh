#!/bin/sh
# Compiles every ```c block of README.md that has a main() under the strict
# flags, runs it, and checks what it prints: the README's code cannot rot.
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
    if cc $strict -fsanitize=address,undefined -I. -o "${f%.c}" "$f" 2> "${f%.c}.err" &&
       out=$("${f%.c}") && [ "$out" = "client got: hello" ]; then
        echo "ok   README block $(basename "$f")"; pass=$((pass + 1))
    else
        echo "FAIL README block $(basename "$f")"; cat "${f%.c}.err"; echo "output: $out"; fail=$((fail + 1))
    fi
done
echo "Pass: $pass, fail: $fail, skip: 0."
[ "$fail" -eq 0 ]
