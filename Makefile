# nqec: `make test` sets everything up from scratch and runs the tests; `make demo` runs the main job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FPGA_MODEL ?= predecoder-fpga
FPGA_DIR ?= out/fpga/$(FPGA_MODEL)

RTL_D ?= 13
RTL_DIR ?= out/fpga/rtl-d$(RTL_D)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages of the open RTL flow, installed when missing: $(call debian,COMMAND,PACKAGE)
debian = command -v $(1) >/dev/null || $(SUDO) apt-get install -y -qq --no-install-recommends $(2) >/dev/null \
	|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(2) >/dev/null; } \
	|| { echo "could not install $(1) (Debian package $(2)); install it and re-run" >&2; exit 1; }

.PHONY: test demo install reference clean fpga-export fpga-csim fpga-synth fpga-cosim fpga-bitstream fpga-report \
	fpga-tools fpga-rtl fpga-rtlsim fpga-yosys

$(STAMP): pyproject.toml setup.py proto/decoder.proto decoder/weighted_matching.cc decoder/window_loop.cc \
		decoder/pymatching_stim/stim.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU torch first (local wheel on these machines), then the project.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	@$(call debian,iverilog,iverilog)
	@$(call debian,yosys,yosys)
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

# Open RTL flow (no vendor tools): da4ml kernels, Verilator/Icarus simulation, yosys estimate.
fpga-tools: $(STAMP)
	@$(call debian,iverilog,iverilog)
	@$(call debian,yosys,yosys)
	$(BIN)/python -m pip install --quiet -e '.[rtl]'

fpga-rtl: $(STAMP)
	$(BIN)/nqec fpga rtl --model $(FPGA_MODEL) -d $(RTL_D) --out $(RTL_DIR)

fpga-rtlsim: fpga-tools
	$(BIN)/nqec fpga rtlsim --model $(FPGA_MODEL) -d $(RTL_D) --windows 10000 --out $(RTL_DIR) \
		--json out/fpga/rtlsim-d$(RTL_D).json

fpga-yosys: fpga-tools fpga-rtl
	$(BIN)/nqec fpga synth-open --rtl $(RTL_DIR) --json out/fpga/yosys-d$(RTL_D).json

clean:
	rm -rf $(VENV) build *.egg-info
