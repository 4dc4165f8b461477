# ws_channel.h — build the examples, run the tests, the demo, the benchmarks.
#   make            examples into build/
#   make test       installs what is missing (tests/packages.txt), then every
#                   test: plain, under ASan+UBSan, with char of the other
#                   signedness, on aarch64, s390x and i386 (cross, qemu-user),
#                   then the interop tests
#   make demo       the demo server
#   make bench      benchmarks side by side with peer libraries
#   make fuzz       libFuzzer targets (FUZZ_SECONDS=N each)
#   make soak       the long soak: chat_server alone, then two over Redis,
#                   SOAK_SECONDS each (1800); samples and plots in build/soak/

CC      ?= cc
CXX     ?= c++
BUILD   := build
WARN    := -std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion \
           -Wstrict-prototypes -Wmissing-prototypes -Wcast-qual -Wpointer-arith \
           -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror
CFLAGS  ?= -O2 -g
SAN     := -O1 -g -fsanitize=address,undefined,alignment -fno-omit-frame-pointer -fno-sanitize-recover=all
GREATEST ?= tests/greatest.h

TESTS    := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c))
EXAMPLES := $(patsubst examples/%.c,%,$(wildcard examples/*.c))
# Examples that need a library beyond libc, and the flags they link with.
# One whose library is not installed is skipped, with a note.
LIBS_libuv_client := -luv
HAVE_LIBUV := $(shell printf '\043include <uv.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
ifneq ($(HAVE_LIBUV),1)
EXAMPLES := $(filter-out libuv_client,$(EXAMPLES))
$(info note: libuv_client is skipped: libuv is not installed (Debian: libuv1-dev))
endif
# chat_server speaks to Redis (--redis) when hiredis is installed; without it
# the demo builds and runs the same, minus that flag.
HAVE_HIREDIS := $(shell printf '\043include <hiredis/async.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_HIREDIS),1)
LIBS_chat_server := -DCHAT_WITH_REDIS -lhiredis
endif
# OpenSSL (Debian: libssl-dev) is the TLS of examples/tls_openssl.h:
# chat_server and echo_server --tls-cert, client_cli wss://. Without it they
# build without TLS and refuse those options with a one-line message.
HAVE_OPENSSL := $(shell printf '\043include <openssl/ssl.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_OPENSSL),1)
LIBS_echo_server := -DEXAMPLE_TLS -lssl -lcrypto
LIBS_client_cli := -DEXAMPLE_TLS -lssl -lcrypto
LIBS_chat_server += -DEXAMPLE_TLS -lssl -lcrypto
else
$(info note: chat_server, echo_server and client_cli are built without TLS (--tls-cert, wss:// URLs): OpenSSL is not installed (Debian: libssl-dev))
endif
# zlib (Debian: zlib1g-dev) is the permessage-deflate codec of
# examples/deflate_zlib.h; the suites that compress need it and are skipped
# without it.
ZLIB_TESTS := test_zlib_codec test_deflate
HAVE_ZLIB := $(shell printf '\043include <zlib.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_ZLIB),1)
$(foreach t,$(ZLIB_TESTS),$(eval LIBS_$(t) := -lz))
EXAMPLE_ZLIB := -DEXAMPLE_ZLIB -lz
else
TESTS := $(filter-out $(ZLIB_TESTS),$(TESTS))
$(info note: $(ZLIB_TESTS) are skipped and the examples built without permessage-deflate: zlib is not installed (Debian: zlib1g-dev))
endif

.PHONY: all test run-tests unit interop demo bench fuzz soak clean peers compile-checks
all: $(addprefix $(BUILD)/,$(EXAMPLES))

$(BUILD)/%: examples/%.c examples/*.h ws_channel.h | $(BUILD)
	$(CC) $(WARN) -D_GNU_SOURCE -Wno-missing-prototypes $(CFLAGS) -I. -Iexamples -o $@ $< $(LIBS_$*) $(EXAMPLE_ZLIB)

$(BUILD) $(BUILD)/test $(BUILD)/asan:
	mkdir -p $@

# The test programs include greatest through GREATEST_HEADER so the real one can replace ours.
TEST_DEFS := -DGREATEST_HEADER='"$(abspath $(GREATEST))"' -D_GNU_SOURCE
# Tests may include the examples' headers (examples/deflate_zlib.h).
$(BUILD)/test/%: tests/%.c tests/*.h examples/*.h ws_channel.h | $(BUILD)/test
	$(CC) $(WARN) $(CFLAGS) $(TEST_DEFS) -I. -Itests -o $@ $< -lm $(LIBS_$*)
$(BUILD)/asan/%: tests/%.c tests/*.h examples/*.h ws_channel.h | $(BUILD)/asan
	$(CC) $(WARN) $(SAN) $(TEST_DEFS) -I. -Itests -o $@ $< -lm $(LIBS_$*)

# The layers with SIMD paths also run with the scalar paths only, sanitized;
# test_simd compares the two (tests/simd_check.sh).
NOSIMD_TESTS := test_primitives test_conn test_envelope test_simd
$(BUILD)/nosimd/%: tests/%.c tests/*.h ws_channel.h
	@mkdir -p $(BUILD)/nosimd
	$(CC) $(WARN) $(SAN) -DWSCH_NO_SIMD $(TEST_DEFS) -I. -Itests -o $@ $< -lm

# Every suite once more with char of the other signedness than the
# compiler's default (-funsigned-char on x86), so nothing relies on either.
CHAR_FLIP := $(shell printf '\043include <limits.h>\n\043if CHAR_MIN < 0\nCHAR_IS_SIGNED\n\043endif\n' | \
               $(CC) -E -P -x c - 2>/dev/null | grep -q CHAR_IS_SIGNED && echo -funsigned-char || echo -fsigned-char)
$(BUILD)/char/%: tests/%.c tests/*.h examples/*.h ws_channel.h
	@mkdir -p $(BUILD)/char
	$(CC) $(WARN) $(CFLAGS) $(CHAR_FLIP) $(TEST_DEFS) -I. -Itests -o $@ $< -lm $(LIBS_$*)

unit: $(addprefix $(BUILD)/test/,$(TESTS)) $(addprefix $(BUILD)/asan/,$(TESTS)) \
      $(addprefix $(BUILD)/nosimd/,$(NOSIMD_TESTS)) $(addprefix $(BUILD)/char/,$(TESTS)) compile-checks

# The header alone under the strict flags with gcc and clang, as C++, and
# WS_CHANNEL_STATIC in two translation units linked together.
compile-checks: | $(BUILD)
	tests/compile_checks.sh $(BUILD)

peers:
	tests/install_peers.sh

# The interop suites alone (each prints its own summary).
interop: all peers
	for s in tests/interop/run_*.sh; do sh $$s $(BUILD) || exit 1; done

# Installs what is missing first (tests/packages.txt): HAVE_LIBUV,
# HAVE_HIREDIS, HAVE_ZLIB and the list of suites are decided when make reads
# this file, so the build and the run happen in makes started after the
# install.
test:
	tests/install_peers.sh
	$(MAKE) all unit
	$(MAKE) run-tests

# Runs every suite built (after `make all unit`); `make test` is the way in.
run-tests:
	tests/run_all.sh $(BUILD) $(TESTS)

# Only what the demo needs, so it runs with nothing but a C compiler.
demo: $(BUILD)/chat_server
	$(BUILD)/chat_server --port 8080

bench:
	bench/run.sh

FUZZ_SECONDS ?= 60
fuzz:
	$(MAKE) -C fuzz fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

# The short version (SOAK_SECONDS=20) runs inside `make test` as
# tests/interop/run_soak.sh; this is the long one. Needs nothing else
# running on the machine, for its figures to mean something.
SOAK_SECONDS ?= 1800
soak: all
	SOAK_SECONDS=$(SOAK_SECONDS) sh tests/interop/run_soak.sh $(BUILD)

clean:
	rm -rf $(BUILD)
