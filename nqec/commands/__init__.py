"""One module per area of the command line. Each has ``register(commands)``, which adds its
subcommands to the ``nqec`` parser; a command parses, calls library functions, prints."""
