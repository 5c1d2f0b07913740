# PolypScope: two commands do all set-up on a fresh machine.
#   make test   creates .venv, installs the pinned set, runs the test suite
#   make demo   creates .venv, installs, opens the app on the bundled clip (replay report when headless)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data/kvasir-seg
DEMO_CLIP  ?= assets/demo/demo.mp4
DEMO_MODEL ?= assets/models/default.onnx

.PHONY: all venv test test-fast demo lint bench train-baseline prune-study default-model clean

all: test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check models training engine app tests

demo: $(STAMP)
	@test -f $(DEMO_MODEL) || { echo "$(DEMO_MODEL) is missing: it is produced by the pruning study (docs/pruning.md)"; exit 1; }
	@test -f $(DEMO_CLIP) || { echo "$(DEMO_CLIP) is missing: make it with 'python assets/demo/make_demo_clip.py'"; exit 1; }
	@if [ -n "$$DISPLAY" ] || [ -n "$$WAYLAND_DISPLAY" ]; then \
		$(BIN)/polypscope app $(DEMO_CLIP) --model $(DEMO_MODEL); \
	else \
		echo "no display: replaying the demo clip headless instead"; \
		$(BIN)/polypscope detect $(DEMO_CLIP) --model $(DEMO_MODEL) --realtime --report demo-report.json && cat demo-report.json; \
	fi

bench: $(STAMP)
	$(BIN)/python -m engine.benchmark_report --out docs/performance.md

# The CPU baseline recipe (docs/model-card.md): YOLOv3-SPP, width 0.25, 256 px, 90 epochs,
# from scratch on 2 cores.
train-baseline: $(STAMP)
	$(BIN)/polypscope train --data $(DATA) --out runs/baseline --model yolov3-spp --width 0.25 --img 256 \
		--epochs 90 --batch 16 --threads 2 --workers 1

# The pruning study on this CPU (docs/pruning.md): 15 variants, one-shot + BatchNorm
# recalibration + a short fine-tune each, then test scoring and side-by-side latency.
prune-study: $(STAMP)
	$(BIN)/python -m training.prune_study --weights assets/models/baseline.safetensors --data $(DATA) \
		--out runs/study --finetune-epochs 2 --jobs 2 --threads 1 --workers 0 \
		--extra default=assets/models/default.safetensors

# The shipped default model (docs/pruning.md), in its two stages: Taylor-prune half the
# channels of every layer and fine-tune 50 epochs (DEVICE=cuda on a GPU; hours on 2 CPU
# cores), then distil 20 epochs from the baseline; ship (fp16, scored once) and export.
DEVICE ?= auto
default-model: $(STAMP)
	$(BIN)/polypscope prune --weights assets/models/baseline.safetensors --method taylor --ratio 0.5 \
		--scope uniform --finetune-epochs 50 --data $(DATA) --device $(DEVICE) --out runs/default/stage1.safetensors
	$(BIN)/polypscope train --data $(DATA) --out runs/default/distill --init-weights runs/default/stage1.safetensors \
		--distill-from assets/models/baseline.safetensors --epochs 20 --lr 3e-4 --warmup-epochs 0.5 \
		--close-mosaic 8 --threads 2 --workers 1 --seed 1 --device $(DEVICE)
	$(BIN)/python -m training.ship --weights runs/default/distill/best.safetensors \
		--out assets/models/default.safetensors --data $(DATA) --json-out docs/default-metrics.json \
		--pr-plot docs/default-test-pr.png
	$(BIN)/polypscope export --weights assets/models/default.safetensors --out assets/models/default.onnx

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
