"""Stormwatch's own library: one engine package per function, the Azure clients they share, and the CLI.

`normalize/`, `detect/`, `enrich/` and `inventory/` are the engines of `normalize_fn`, `detect_fn`,
`enrich_fn` and `inventory_fn`; `clients/` holds the edges every engine uses (Storage, Event Hubs, ARM,
the dead-letter store); `cli/` is `python -m shared ...`, which nothing else imports. The loose modules
here are the contracts and helpers all of them share (settings, the normalized event, value parsing).
"""

# The release, kept here only: `python -m shared --version`, the dashboard footer, every alert's metadata, the
# package zip's name and CHANGELOG.md's newest heading (tests/test_release.py holds them equal).
__version__ = "0.3.0"
