"""``python -m secmsg.toolbar``: the reference toolbar agent (being built)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("secmsg-toolbar: not built yet")


if __name__ == "__main__":
    main()
