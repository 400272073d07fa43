"""One module per `paintbench` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
