# Two commands set everything up (`make setup` is implied by the others); see README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pinned: this version resolves to a CPU-only build here; an unpinned `torch` may pull a
# multi-GB CUDA build
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-quick outputs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

# the main job: emit a zoo net and check it (prototxt + caffemodel + ONNX, verified)
demo: $(STAMP)
	mkdir -p build/demo
	$(BIN)/protogen emit shufflenet_v1 --format prototxt -o build/demo/shufflenet_v1.prototxt
	$(BIN)/protogen emit shufflenet_v1 --format caffemodel -o build/demo/shufflenet_v1.caffemodel
	$(BIN)/protogen emit shufflenet_v1 --format onnx -o build/demo/shufflenet_v1.onnx
	$(BIN)/protogen stats shufflenet_v1 | tail -n 1
	$(BIN)/protogen verify shufflenet_v1

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# for development: everything but the long end-to-end cases marked `slow` (CI runs `make test`)
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

outputs: $(STAMP)
	$(BIN)/python scripts/gen_outputs.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .pytest_cache
