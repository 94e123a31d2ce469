"""nqec command-line entry point (``nqec ...``); the libraries live in decoder, training, server, fpga."""
