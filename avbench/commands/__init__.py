"""One module per ``avbench`` subcommand; each exposes ``add_parser(subparsers)``."""
