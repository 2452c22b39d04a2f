"""``dfkd`` subcommands; each module offers ``add_parser(subparsers)`` setting ``func``."""
