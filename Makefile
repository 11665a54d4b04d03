# edgeprune: `make deploy TARGET=rpi` and `make test` are all a fresh clone needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)

TARGET ?= rpi
MODEL  ?=
DATA   ?= datasets/synth.yaml
OUT    ?= dist
EPOCHS ?=
TRUST_CHECKPOINT ?=
PYTEST_ARGS ?=

export OMP_NUM_THREADS ?= $(shell nproc)
export YOLO_OFFLINE := 1

.PHONY: setup deploy emulate emulate-tools test test-fast bench bench-guard bench-latency bench-budget bench-prune bench-recovery bench-targets bench-ops bench-guard-latency bench-stream bench-control baseline data clean help

help:
	@echo "make deploy TARGET=rpi [MODEL=yolo11n.pt] [DATA=datasets/x.yaml]   full pipeline -> dist/<target>/"
	@echo "make emulate TARGET=rpi                                           bundle's script on qemu's ARM CPU, outputs vs host"
	@echo "make test                                                         unit + end-to-end tests"
	@echo "make baseline [MODEL=yolo26n.yaml]                                re-train baselines/<model>-synth.pt"
	@echo "make bench / bench-prune / bench-stream / bench-guard / bench-latency / bench-budget / bench-targets / bench-ops / bench-guard-latency   benchmarks -> bench/*.json, *.md"

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

data: setup
	$(BIN)/edgeprune data synth

deploy: setup
	$(BIN)/edgeprune deploy --target $(TARGET) --data $(DATA) --out $(OUT) \
		$(if $(MODEL),--model $(MODEL)) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(TRUST_CHECKPOINT),--trust-checkpoint) \
		$(if $(LATENCY_TABLE),--latency-table $(LATENCY_TABLE)) $(if $(BUDGET),--budget $(BUDGET)) \
		$(if $(FLOPS),--flops $(FLOPS)) $(if $(IMGSZ),--imgsz $(IMGSZ))

emulate: setup emulate-tools      # the bundle's own validation script on qemu's ARM CPU, checked against the host
	@test -f $(OUT)/$(TARGET)/metadata.json || $(MAKE) deploy TARGET=$(TARGET)
	$(BIN)/edgeprune emulate --target $(TARGET) --bundle $(OUT)/$(TARGET)

emulate-tools:                      # qemu-user-static + mmdebstrap from the distribution (root installs them)
	@command -v qemu-aarch64-static >/dev/null && command -v mmdebstrap >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static mmdebstrap; \
	else echo "emulation needs qemu-user-static and mmdebstrap: sudo apt-get install qemu-user-static mmdebstrap"; \
		exit 2; fi

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# make baseline [MODEL=yolo26n.yaml] [EPOCHS=N]: the shipped baselines, each from seed 0, equal epochs so they compare
BASELINE_YAML   = $(or $(MODEL),yolo11n.yaml)
BASELINE_NAME   = $(basename $(notdir $(BASELINE_YAML)))
BASELINE_EPOCHS := 200
baseline: setup
	$(BIN)/edgeprune baseline --model $(BASELINE_YAML) --data datasets/synth.yaml --imgsz 256 --seed 0 \
		--epochs $(or $(EPOCHS),$(BASELINE_EPOCHS)) \
		--out baselines/$(BASELINE_NAME)-synth.pt --work-dir runs/baseline-$(BASELINE_NAME)

bench: setup                       # export artefacts vs Ultralytics' own exports (needs a finished `make deploy`)
	$(BIN)/python -m benchmarks.exports --out bench
	$(MAKE) bench-stream TARGET=rpi
	@test -f $(OUT)/host/metadata.json || $(BIN)/edgeprune deploy --target host --data $(DATA) --out $(OUT) \
		--run-dir runs/rpi        # the host bundle shares the rpi run's trunk: only its export runs
	$(MAKE) bench-stream TARGET=host

bench-control: setup               # unpruned baseline given the same fine-tuning epochs (needs `make deploy`)
	$(BIN)/python -m benchmarks.control --run-dir runs/$(TARGET) --out bench

bench-guard: setup                # the INT8 guard's levels + sensitivity search under a forced 0.1-point budget
	$(BIN)/python -m benchmarks.guard --format tflite --out bench
	$(BIN)/python -m benchmarks.guard --format tensorrt --out bench

bench-latency: setup              # latency model vs measurement on held-out pruned variants (this host's runtimes)
	$(BIN)/python -m benchmarks.latency --out bench $(if $(FAMILIES),--families $(FAMILIES)) \
		$(if $(RUNTIMES),--runtimes $(RUNTIMES))

bench-budget: setup               # budget search vs uniform FLOPs pruning vs a smaller input, same epochs, artefacts run
	$(BIN)/python -m benchmarks.budget --out bench/budget $(if $(MODELS),--models $(MODELS)) \
		$(if $(FRACTIONS),--budget-fractions $(FRACTIONS)) $(if $(EPOCHS),--epochs $(EPOCHS))

bench-recovery: setup             # what closes the pruned-vs-unpruned gap at equal epochs (criterion, ranking, lr, sparsity, epochs, distillation)
	$(BIN)/python -m benchmarks.recovery --out bench $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
		$(if $(RECIPES),--recipes $(RECIPES)) $(if $(GOAL),--goal $(GOAL)) $(if $(SEED),--seed $(SEED))

# params / GFLOPs / ONNX Runtime latency before vs after pruning at 30/50/70 %;
# ACCURACY=baselines/yolo11n-synth.pt adds mAP50-95 after fine-tuning per goal vs the unpruned control (slow);
# DISTILL=4 also fine-tunes each goal with distillation from that checkpoint, STEPS="1 2" compares schedules,
# CRITERION=taylor prunes by the profiles' criterion instead of l2; CHECKPOINTS="base.pt cut.pt" times trained
# checkpoints as ratios to the first instead of the families' random-initialised prunings
bench-prune: setup
	$(BIN)/python -m benchmarks.pruning --out bench $(if $(ACCURACY),--accuracy $(ACCURACY)) \
		$(if $(DISTILL),--distill-weight $(DISTILL)) $(if $(STEPS),--steps $(STEPS)) \
		$(if $(CRITERION),--criterion $(CRITERION)) $(if $(ALLOCATIONS),--allocations $(ALLOCATIONS)) \
		$(if $(CHECKPOINTS),--checkpoints $(CHECKPOINTS)) $(if $(RUNTIME),--runtime $(RUNTIME))

bench-targets: setup              # one checkpoint through every target's artefact, each run for its mAP
	$(BIN)/python -m benchmarks.targets --out bench/targets $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

bench-ops: setup                   # ONNX Runtime's per-operator profile, unpruned vs pruned; HEADS=1 also halves attention heads
	$(BIN)/python -m benchmarks.ops --out bench/ops $(if $(HEADS),--heads)

bench-guard-latency: setup        # latency of each INT8 guard level side by side (why plans time INT8 at the last level)
	$(BIN)/python -m benchmarks.guard_latency --format tflite --out bench/guard-latency

bench-stream: setup                # end-to-end FPS and latency of the drone / automotive loops on the rpi bundle
	$(BIN)/edgeprune data video --out bench/val.avi
	$(BIN)/python deploy/integrations/bench_stream.py --bundle $(OUT)/$(TARGET) --video bench/val.avi --seconds 10 \
		> bench/stream-$(TARGET).json
	@cat bench/stream-$(TARGET).json

clean:
	rm -rf runs dist bench .pytest_cache
