# Thin wrapper over CMake for the everyday commands.
#   make run    install what is missing, build, train the default preset
#   make test   install what is missing, build, run the whole test suite
BUILD ?= build
JOBS  ?= $(shell nproc)
# REED with the shipped teacher's targets (assets/teacher.safetensors).
CONFIG ?= scripts/lua/presets/reed.lua

.PHONY: all deps build run test asan bench bench-method clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/reed run $(CONFIG)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer, but
# for test_learning (200 training steps: slow under ASan, and it exercises no
# code path the other tests do not).
asan: deps
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DREED_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && REED_SANITIZED=1 ctest --output-on-failure -j $(JOBS) -E '^test_learning$$'

# Engine vs PyTorch training steps on the CPU (bench/run.sh; ~15 minutes).
bench: build
	bash bench/run.sh $(BUILD)

bench-method: build
	bash bench/method.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-asan
