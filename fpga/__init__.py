"""FPGA flow for the pre-decoder: hls4ml conversion, fixed-point emulation, C simulation,
test vectors, vendor build steps and cost estimates."""
