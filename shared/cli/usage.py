"""What the command-line modules share without importing `shared.cli.main` (which imports them)."""

import argparse


class UsageError(Exception):
    """Unusable arguments or input: reported in one line with exit status 2, never a traceback."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (SDK errors carry whole HTTP exchanges)."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def port_number(text: str) -> int:
    """An argparse type: a TCP port (0-65535), refused in one line otherwise."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (0-65535)")
    return int(text)
