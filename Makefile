# boneage: `make demo` runs the pipeline on generated phantoms, `make test` runs every test.
# Both install missing packages first (scripts/install-deps), then configure and build.
BUILD ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps configure build test test-quick demo bench clean

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

demo: build
	scripts/demo

bench: build
	scripts/bench

clean:
	rm -rf $(BUILD)
