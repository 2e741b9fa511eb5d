"""``ailand analyse``: placeholder while the plugin is written (issue 19)."""


def register(subparsers) -> None:
    """Add ``analyse`` to the ``ailand`` subcommands."""
    s = subparsers.add_parser("analyse", help="learned analyses (issue 19)")
    s.set_defaults(func=lambda args: 0)
