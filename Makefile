# The two commands: `make demo` (train, export float32 and int8, generate, bench on the bundled Shakespeare)
# and `make test`.
# Both set everything up from nothing: a virtual environment in .venv, torch==2.13.0 first (the CPU
# build; any looser spec lets pip pull a CUDA build), then edgernn with its train and dev extras.
# `make system-deps` installs the Debian packages of .ci/debian-packages.txt (the device toolchains and
# emulators the device tests and the end of `make demo` use; CI installs the same list).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgernn-installed
DEMO_MINUTES ?= 2

DEBIAN_PACKAGES := $(strip $(shell sed 's/\#.*//' .ci/debian-packages.txt))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup system-deps demo test lint results training-results quant-results stepper-results clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev,serve]'
	touch $(STAMP)

setup: $(STAMP)

system-deps:  # Debian: the packages the device tests and `make demo`'s last step need (uses sudo unless root)
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y $(DEBIAN_PACKAGES)

demo: $(STAMP)
	$(BIN)/edgernn train examples/data/tinyshakespeare.txt -o runs/shakespeare --minutes $(DEMO_MINUTES)
	$(BIN)/edgernn export runs/shakespeare -o out/shakespeare.onnx
	$(BIN)/edgernn inspect out/shakespeare.onnx
	$(BIN)/edgernn generate out/shakespeare.onnx --prompt "ROMEO:" -n 400 --seed 7
	$(BIN)/edgernn export runs/shakespeare -o out/shakespeare-int8.onnx --quantize int8
	$(BIN)/edgernn generate out/shakespeare-int8.onnx --prompt "ROMEO:" -n 200 --seed 7
	$(BIN)/edgernn bench out/shakespeare.onnx out/shakespeare-int8.onnx --steps 5000
	$(MAKE) --no-print-directory -C examples/mcu demo CHAR_MODEL=$(CURDIR)/out/shakespeare.onnx \
		EDGERNN=$(CURDIR)/$(BIN)/edgernn BUILD=$(CURDIR)/out/mcu CHARS=300

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

results: $(STAMP)
	$(BIN)/python benchmarks/foundation_results.py runs/shakespeare out/shakespeare.onnx

training-results: $(STAMP)  # every task on its bundled data set over 3 seeds, PyTorch vs the exported stepper (~20 min)
	$(BIN)/python benchmarks/training_results.py --out runs/results

quant-results: $(STAMP)  # trains 11 small char models on first use (cached in runs/quant-bench), ~30 min
	$(BIN)/python benchmarks/quantization.py

stepper-results: $(STAMP)  # the stepper against PyTorch and a plain ONNX export, side by side (~30 s)
	mkdir -p out && $(BIN)/python benchmarks/stepper_bench.py --plot out/stepper-latency.png

clean:
	rm -rf $(VENV) runs out .pytest_cache .ruff_cache
