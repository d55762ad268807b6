"""The `devicectl` subcommands, one module each: `register(subparsers)` adds them."""
