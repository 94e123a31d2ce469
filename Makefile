# nqec: `make test` sets everything up from scratch and runs the tests; `make demo` runs the main job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FPGA_MODEL ?= predecoder-fpga
FPGA_DIR ?= out/fpga/$(FPGA_MODEL)

.PHONY: test demo install reference clean fpga-export fpga-csim fpga-synth fpga-cosim fpga-bitstream fpga-report

$(STAMP): pyproject.toml setup.py proto/decoder.proto
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU torch first (local wheel on these machines), then the project.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

reference: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[reference]'

demo: $(STAMP)
	$(BIN)/nqec demo

# FPGA flow: export and C simulation run here; the vendor steps need vitis_hls / vivado on PATH.
fpga-export: $(STAMP)
	$(BIN)/nqec fpga export --model $(FPGA_MODEL) --out $(FPGA_DIR)

fpga-csim: fpga-export
	$(BIN)/nqec fpga csim --model $(FPGA_MODEL) --shots 100000 --json out/fpga/csim.json

fpga-synth: fpga-export
	$(BIN)/nqec fpga build synth --project $(FPGA_DIR)
	$(BIN)/nqec fpga report $(FPGA_DIR) --json out/fpga/synth_report.json

fpga-cosim: fpga-export
	$(BIN)/nqec fpga build cosim --project $(FPGA_DIR)

fpga-bitstream: fpga-export
	$(BIN)/nqec fpga build bitstream --project $(FPGA_DIR)

fpga-report: $(STAMP)
	$(BIN)/nqec fpga report $(FPGA_DIR)

clean:
	rm -rf $(VENV) build *.egg-info
