"""The ``flowlab`` command: one module per command family."""


def main(argv=None) -> int:
    """Entry point of the ``flowlab`` console script."""
    from .app import main as run

    return run(argv)
