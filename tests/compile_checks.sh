#!/bin/sh
# Compile checks: the header under the strictest flags with gcc and clang (C99)
# in every layer combination a user can select, as C++11, and
# WS_CHANNEL_STATIC in two translation units linked together, with nothing
# suppressed: a static build that calls one function must not warn about the
# rest.
set -e
build=${1:-build}/compile
mkdir -p "$build"
strict="-std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -Wstrict-prototypes \
-Wmissing-prototypes -Wcast-qual -Wpointer-arith -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror"
printf '#define WS_CHANNEL_IMPLEMENTATION\n#include "ws_channel.h"\nint main(void) { return wsch_err_str(0)[0] == 0; }\n' > "$build/impl.c"
printf '#include "ws_channel.h"\nint decl_only(void);\nint decl_only(void) { return WSCH_OK; }\n' > "$build/decl.c"
# Layer selections: all, no hub, no client, conn without the envelope
# (so neither client nor hub), codec only (primitives, frames, handshake),
# codec and envelope.
layers="-DWS_CHANNEL_ALL
-DWS_CHANNEL_NO_HUB
-DWS_CHANNEL_NO_CLIENT
-DWS_CHANNEL_NO_ENVELOPE
-DWS_CHANNEL_NO_CONN
-DWS_CHANNEL_NO_CONN -DWS_CHANNEL_NO_ENVELOPE"
for cc in gcc clang; do
    command -v $cc >/dev/null || { echo "compile check: $cc missing"; exit 1; }
    echo "$layers" | while read -r sel; do
        tag=$(echo "$sel" | tr -d ' ' | sed 's/-DWS_CHANNEL_//g')
        $cc $strict $sel -I. -c "$build/impl.c" -o "$build/impl-$cc-$tag.o"
        $cc $strict $sel -I. -c "$build/decl.c" -o "$build/decl-$cc-$tag.o"
        $cc $strict $sel -DWS_CHANNEL_STATIC -I. -c "$build/impl.c" -o "$build/static-$cc-$tag.o"
    done
done
for cxx in g++ clang++; do
    command -v $cxx >/dev/null || continue
    for sel in -DWS_CHANNEL_ALL "-DWS_CHANNEL_NO_CONN -DWS_CHANNEL_NO_ENVELOPE"; do
        $cxx -x c++ -std=c++11 -Wall -Wextra -Werror -fno-exceptions -fno-rtti $sel -I. -c "$build/impl.c" \
            -o "$build/impl-$cxx.o"
    done
done
# The POSIX loop layer (WS_CHANNEL_POSIX) in every layer selection, C and
# C++, static too, with POSIX.1-2008 asked for as a strict C99 program must;
# then with its backends narrowed: poll alone (a platform without epoll or
# kqueue) and kqueue, compiled (never run) against the BSD declarations in
# tests/stubs, so the backend this machine lacks still meets the warnings.
posix="-DWS_CHANNEL_POSIX -D_POSIX_C_SOURCE=200809L"
for cc in gcc clang; do
    echo "$layers" | while read -r sel; do
        tag=$(echo "$sel" | tr -d ' ' | sed 's/-DWS_CHANNEL_//g')
        $cc $strict $posix $sel -I. -c "$build/impl.c" -o "$build/posix-$cc-$tag.o"
        $cc $strict $posix $sel -DWS_CHANNEL_STATIC -I. -c "$build/impl.c" -o "$build/posix-static-$cc-$tag.o"
    done
    $cc $strict $posix -DWSCH_POSIX_EPOLL=0 -I. -c "$build/impl.c" -o "$build/posix-poll-$cc.o"
    $cc $strict $posix -DWSCH_POSIX_EPOLL=0 -DWSCH_POSIX_KQUEUE=1 -Itests/stubs -I. -c "$build/impl.c" \
        -o "$build/posix-kqueue-$cc.o"
    $cc $strict -DWS_CHANNEL_POSIX -I. -c "$build/decl.c" -o "$build/posix-decl-$cc.o"
done
for cxx in g++ clang++; do
    command -v $cxx >/dev/null || continue
    for sel in -DWS_CHANNEL_ALL "-DWS_CHANNEL_NO_CONN -DWS_CHANNEL_NO_ENVELOPE"; do
        $cxx -x c++ -std=c++11 -Wall -Wextra -Werror -fno-exceptions -fno-rtti -DWS_CHANNEL_POSIX $sel -I. \
            -c "$build/impl.c" -o "$build/posix-impl-$cxx.o"
    done
done
# The NEON paths under clang's strict warnings, C and C++, when the AArch64
# libc headers are installed (tests/packages.txt; tests/cross_check.sh builds
# and runs them with gcc). -nostdinc++: the header needs only C headers, and
# Debian has no AArch64 libstdc++ headers without the cross g++.
if [ -d /usr/aarch64-linux-gnu/include ]; then
    clang --target=aarch64-linux-gnu $strict -DWS_CHANNEL_ALL -I. -c "$build/impl.c" -o "$build/impl-aarch64.o"
    clang++ --target=aarch64-linux-gnu -nostdinc++ -x c++ -std=c++11 -Wall -Wextra -Werror -fno-exceptions -fno-rtti \
        -I. -c "$build/impl.c" -o "$build/impl-aarch64-cxx.o"
else
    echo "compile check: no AArch64 headers (libc6-dev-arm64-cross): NEON not compiled with clang"
fi
# Two translation units, each with its own static copy of the implementation.
printf '#define WS_CHANNEL_STATIC\n#define WS_CHANNEL_IMPLEMENTATION\n#include "ws_channel.h"\nconst char *unit_a(void);\nconst char *unit_a(void) { return wsch_err_str(WSCH_ERR_ARG); }\n' > "$build/static_a.c"
printf '#define WS_CHANNEL_STATIC\n#define WS_CHANNEL_IMPLEMENTATION\n#include "ws_channel.h"\n#include <string.h>\nconst char *unit_a(void);\nint main(void) { return strcmp(unit_a(), wsch_err_str(WSCH_ERR_ARG)) != 0; }\n' > "$build/static_b.c"
for sel in -DWS_CHANNEL_ALL "-DWS_CHANNEL_NO_CONN -DWS_CHANNEL_NO_ENVELOPE" \
           "-DWS_CHANNEL_POSIX -D_POSIX_C_SOURCE=200809L"; do
    gcc -std=c99 -Wall -Wextra -Werror $sel -I. "$build/static_a.c" "$build/static_b.c" -o "$build/static_ab"
    "$build/static_ab"
done
echo "compile checks: ok"
