# logmm: two commands set everything up on a machine with only python3.
#   make demo    create .venv, install logmm, run multiply, project, chain, power, einsum on sample_data/
#                (results in demo_output/make-demo/)
#   make test    create .venv if needed, install with test extras, lint, run the suite,
#                then the examples/ pipelines (Make, Snakemake, SLURM script; pytest -m examples)
#   make bench   run benchmarks/ and print ratio tables (with the bench extra: dask too)
#   make bench-plots  measure again and redraw the PNGs in docs/img/ (docs/benchmarks.md)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the demo writes apart from the README's tour (which writes into demo_output/), so that
# the tour runs as written after `make demo`
DEMO_OUT := demo_output/make-demo
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: demo test test-slow lint bench bench-plots sample-data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# An editable install leaves logmm uncompiled, and with PYTHONDONTWRITEBYTECODE set (as
# on this project's machines) every `logmm` process compiled ~40 modules again: a tiny
# multiply took 337 ms from source and 258 ms from bytecode (medians of 10). compileall
# writes the bytecode once; Python still recompiles (in memory) a module edited since.
COMPILE = $(BIN)/python -m compileall -q core cli

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(COMPILE)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(COMPILE)
	@# torch is optional (logmm[torch]), for the gradient wrapper's tests. On this project's
	@# machines pip finds a CPU wheel of torch 2.13.0 on disk; from PyPI on Linux it is a CUDA
	@# build of several GB: `make test TORCH=` skips it (its tests then skip, visibly), or
	@# TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' takes the CPU build.
	$(if $(TORCH),$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) '$(TORCH)' || echo "torch could not be installed: torch tests will be skipped",@echo "TORCH is empty: torch not installed, torch tests will be skipped")
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(COMPILE)
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	mkdir -p $(DEMO_OUT)
	$(BIN)/logmm multiply sample_data/a.h5:/a sample_data/b.h5:/b -o $(DEMO_OUT)/ab.h5 --overwrite
	$(BIN)/logmm multiply sample_data/a.npy sample_data/b.zarr:b -o $(DEMO_OUT)/ab.zarr --overwrite
	$(BIN)/logmm multiply sample_data/adversarial.h5:/a sample_data/adversarial.h5:/b -o $(DEMO_OUT)/adversarial.npy --overwrite
	$(BIN)/logmm project sample_data/x_sparse.npz sample_data/w.npy --blocks 6 -o $(DEMO_OUT)/projected.h5 --overwrite
	$(BIN)/logmm chain sample_data/chain.h5:/m1 sample_data/chain.h5:/m2 sample_data/chain.h5:/m3 -o $(DEMO_OUT)/chain.h5 --explain --overwrite
	$(BIN)/logmm power sample_data/trans.npy -n 16 -o $(DEMO_OUT)/trans16.npy --overwrite
	$(BIN)/logmm einsum 'bij,bjk->bik' sample_data/batch.h5:/x sample_data/batch.h5:/y -o $(DEMO_OUT)/batch.h5 --overwrite
	@echo "demo results are in $(DEMO_OUT)/"

# mypy checks the package by its installed names: core/ is logmm and cli/ is logmm.cli (the
# package-dir mapping in pyproject.toml, which mypy cannot follow; `mypy core cli` would check
# a package named `core` and see none of cli's `logmm.*` imports). A tree of links shows it
# so; the messages are mapped back to core/ and cli/ paths.
MYPY_TREE := $(VENV)/mypy-tree

lint: $(VENV)/.installed-test
	$(BIN)/ruff check core cli tests benchmarks sample_data examples
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/logmm
	ln -s $(CURDIR)/core/* $(MYPY_TREE)/logmm/ && ln -s $(CURDIR)/cli $(MYPY_TREE)/logmm/cli
	MYPYPATH=$(MYPY_TREE) $(BIN)/mypy -p logmm > $(MYPY_TREE)/report; status=$$?; \
	  sed -e 's|^$(MYPY_TREE)/logmm/cli/|cli/|' -e 's|^$(MYPY_TREE)/logmm/|core/|' \
	  $(MYPY_TREE)/report; exit $$status

test: lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m examples
	$(BIN)/python -m pytest -m packaging

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_logmatmul.py
	$(BIN)/python benchmarks/bench_latency.py
	$(BIN)/python benchmarks/bench_streaming.py
	$(BIN)/python benchmarks/bench_project.py
	$(BIN)/python benchmarks/bench_einsum.py
	$(BIN)/python benchmarks/bench_loglik.py
	$(BIN)/python benchmarks/bench_grad.py
	$(BIN)/python benchmarks/bench_scaling.py
	$(BIN)/python benchmarks/bench_dask_api.py

bench-plots: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_plots.py --out docs/img
	$(BIN)/python benchmarks/bench_latency.py --plot docs/img/latency_vs_size.png

sample-data: $(VENV)/.installed
	$(BIN)/python sample_data/make_sample_data.py --out sample_data

clean:
	rm -rf $(VENV) demo_output *.egg-info .pytest_cache .ruff_cache .hypothesis
