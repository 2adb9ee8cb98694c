"""The command line every service shares: ``python -m secmsg.<svc> [--help]``.

A service is configured only by environment variables (its settings classes), so the command
line takes no options; ``--help`` lists those variables with their defaults and descriptions
(the same text as docs/configuration.md), and anything else is refused with exit status 2
before a setting is read. Used first thing in each ``__main__``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from pydantic_settings import BaseSettings


def env_lines(settings: type[BaseSettings]) -> list[str]:
    """One line per environment variable the settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    out: list[str] = []
    for name, field in settings.model_fields.items():
        default = "required" if field.is_required() else f"default {field.default!r}"
        desc = field.description or ""
        out.append(f"  {prefix}{name.upper()}  ({default})  {desc}".rstrip())
    return out


def parse_args(prog: str, doc: str | None, *settings: type[BaseSettings],
               argv: Sequence[str] | None = None) -> None:
    """Print the help and exit 0 for ``--help``; exit 2 for any other argument."""
    epilog = ["environment variables:"]
    for cls in settings:
        epilog += [textwrap.shorten(line, 400) for line in env_lines(cls)]
    parser = argparse.ArgumentParser(
        prog=f"python -m {prog}", description=(doc or "").strip(),
        epilog="\n".join(epilog), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(sys.argv[1:] if argv is None else list(argv))
