# boneage: `make demo` runs the pipeline on generated phantoms, `make test` runs every test.
# Both install missing packages first (scripts/install-deps), then configure and build.
BUILD ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps configure build test test-quick demo bench clean fuzz test-sanitize

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1500 $(CTEST_ARGS)

# The unit label alone: seconds, no model training.
test-quick: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit $(CTEST_ARGS)

# The unit tests built with AddressSanitizer and UndefinedBehaviorSanitizer, in their own
# build folder; any report fails the test that made it. Not part of `make test`.
SANITIZE_BUILD ?= build-sanitize
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/fuzz/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-sanitize: deps
	cmake -S . -B $(SANITIZE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBONEAGE_SANITIZE=ON
	cmake --build $(SANITIZE_BUILD) -j $(JOBS) --target unit-tests
	cd $(SANITIZE_BUILD) && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS) --timeout 1500 -L unit $(CTEST_ARGS)

# libFuzzer targets (fuzz/), built with clang in their own build folder, each run for
# FUZZ_SECONDS (FUZZ_TARGETS to choose; findings in $(FUZZ_BUILD)/findings). Not part of `make test`.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= image dicom labels model cache http
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBONEAGE_FUZZ=ON \
		-DBONEAGE_TESTS=OFF -DCMAKE_CXX_COMPILER=clang++
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz-targets
	$(SANITIZER_ENV) FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) \
		FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz/run

demo: build
	scripts/demo

bench: build
	scripts/bench

clean:
	rm -rf $(BUILD)
