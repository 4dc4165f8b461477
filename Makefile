# ws_channel.h — build the examples, run the tests, the demo, the benchmarks.
#   make            examples into build/
#   make test       every test, plain and under ASan+UBSan, then the interop tests
#   make demo       the demo server
#   make bench      benchmarks side by side with peer libraries
#   make fuzz       libFuzzer targets (FUZZ_SECONDS=N each)

CC      ?= cc
CXX     ?= c++
BUILD   := build
WARN    := -std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion \
           -Wstrict-prototypes -Wmissing-prototypes -Wcast-qual -Wpointer-arith \
           -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror
CFLAGS  ?= -O2 -g
SAN     := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
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
# zlib (Debian: zlib1g-dev) is the permessage-deflate codec of
# examples/deflate_zlib.h; its unit test needs it and is skipped without it.
HAVE_ZLIB := $(shell printf '\043include <zlib.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_ZLIB),1)
LIBS_test_zlib_codec := -lz
else
TESTS := $(filter-out test_zlib_codec,$(TESTS))
$(info note: test_zlib_codec is skipped: zlib is not installed (Debian: zlib1g-dev))
endif

.PHONY: all test unit interop demo bench fuzz clean peers compile-checks
all: $(addprefix $(BUILD)/,$(EXAMPLES))

$(BUILD)/%: examples/%.c examples/*.h ws_channel.h | $(BUILD)
	$(CC) $(WARN) -D_GNU_SOURCE -Wno-missing-prototypes $(CFLAGS) -I. -o $@ $< $(LIBS_$*)

$(BUILD) $(BUILD)/test $(BUILD)/asan:
	mkdir -p $@

# The test programs include greatest through GREATEST_HEADER so the real one can replace ours.
TEST_DEFS := -DGREATEST_HEADER='"$(abspath $(GREATEST))"' -D_GNU_SOURCE
$(BUILD)/test/%: tests/%.c tests/*.h ws_channel.h | $(BUILD)/test
	$(CC) $(WARN) $(CFLAGS) $(TEST_DEFS) -I. -Itests -o $@ $< -lm $(LIBS_$*)
$(BUILD)/asan/%: tests/%.c tests/*.h ws_channel.h | $(BUILD)/asan
	$(CC) $(WARN) $(SAN) $(TEST_DEFS) -I. -Itests -o $@ $< -lm $(LIBS_$*)
$(BUILD)/test/test_zlib_codec $(BUILD)/asan/test_zlib_codec: examples/deflate_zlib.h

# The layers with SIMD paths also run with the scalar paths only, sanitized.
NOSIMD_TESTS := test_primitives test_conn test_envelope
$(BUILD)/nosimd/%: tests/%.c tests/*.h ws_channel.h
	@mkdir -p $(BUILD)/nosimd
	$(CC) $(WARN) $(SAN) -DWSCH_NO_SIMD $(TEST_DEFS) -I. -Itests -o $@ $< -lm

unit: $(addprefix $(BUILD)/test/,$(TESTS)) $(addprefix $(BUILD)/asan/,$(TESTS)) \
      $(addprefix $(BUILD)/nosimd/,$(NOSIMD_TESTS)) compile-checks

# The header alone under the strict flags with gcc and clang, as C++, and
# WS_CHANNEL_STATIC in two translation units linked together.
compile-checks: | $(BUILD)
	tests/compile_checks.sh $(BUILD)

peers:
	tests/install_peers.sh

# The interop suites alone (each prints its own summary).
interop: all peers
	for s in tests/interop/run_*.sh; do sh $$s $(BUILD) || exit 1; done

test: all unit peers
	tests/run_all.sh $(BUILD) $(TESTS)

# Only what the demo needs, so it runs with nothing but a C compiler.
demo: $(BUILD)/chat_server
	$(BUILD)/chat_server --port 8080

bench:
	bench/run.sh

FUZZ_SECONDS ?= 60
fuzz:
	$(MAKE) -C fuzz fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)
