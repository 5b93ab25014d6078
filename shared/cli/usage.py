"""What the command-line modules share without importing `shared.cli.main` (which imports them)."""


class UsageError(Exception):
    """Unusable arguments or input: reported in one line with exit status 2, never a traceback."""
