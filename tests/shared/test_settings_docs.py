"""The settings named in the prose docs exist, and the READMEs' settings tables give the
defaults the code has. (docs/configuration.md is generated from the settings classes and
checked by test_docs_current.py; the READMEs and docs/*.md are written by hand.)"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from secmsg.shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("ingest", "store", "notify", "retrieve", "notify.deliverability")
# Named in the docs, but not settings of a service: the image's and devstack's build inputs,
# the toolbar's own variables, and NATS stream / KV bucket names.
NOT_SETTINGS = {"SECMSG_BIN_CACHE", "SECMSG_DEBIAN_MIRROR", "SECMSG_IMAGE",
                "SECMSG_IMAGE_TESTS", "SECMSG_SERVICE", "SECMSG_DELIVERIES",
                "SECMSG_NOTIFY_OWNERS"}
VAR = re.compile(r"\bSECMSG_[A-Z0-9_]*[A-Z0-9]\b(?![_*<])")


def _classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = [CommonSettings]
    for name in MODULES:
        mod = importlib.import_module(f"secmsg.{name}.settings")
        found += [v for v in vars(mod).values() if isinstance(v, type)
                  and issubclass(v, BaseSettings) and v.__module__ == mod.__name__]
    return found


def _defaults() -> dict[str, Any]:
    """Every setting's environment variable and its default."""
    out: dict[str, Any] = {}
    for cls in _classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            out[(prefix + name).upper()] = field.default
    return out


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "services").glob("*/README.md")),
            *sorted((ROOT / "docs").glob("*.md"))]


def test_every_setting_the_docs_name_exists() -> None:
    known = _defaults()
    unknown = {f"{path.relative_to(ROOT)}: {var}"
               for path in _docs() for var in VAR.findall(path.read_text())
               if var not in known and var not in NOT_SETTINGS
               and not var.startswith("SECMSG_TOOLBAR_")}
    assert not unknown, sorted(unknown)


def _readme_tables() -> list[tuple[str, str, str, str]]:
    """(README, variable, default as written, row) from each README's settings table."""
    rows = []
    for path in sorted((ROOT / "services").glob("*/README.md")):
        text = path.read_text()
        section = re.search(r"^## Settings \(`(SECMSG_[A-Z]+_)\*`.*?\n(.*?)(?=^## |\Z)", text,
                            re.M | re.S)
        if section is None:
            continue
        prefix, body = section.groups()
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or not cells[0].startswith("`"):
                continue
            names = [n.strip(" `") for n in cells[0].split("/")]
            defaults = [d.strip(" `") for d in cells[1].split("/")]
            if len(names) != len(defaults):
                defaults = [cells[1]] * len(names) if len(names) == 1 else []
            rows += [(path.parent.name, prefix + n, d, line)
                     for n, d in zip(names, defaults, strict=False)]
    return rows


def _same(written: str, default: Any) -> bool:
    if written in ("empty", "unset", "") or written.startswith("(unset"):
        return default in (None, "", [])
    if isinstance(default, bool):
        return written.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(written.replace("_", "").split()[0]) == float(default)
        except ValueError:
            return False
    return written.strip('"') == str(default) or written == json.dumps(default)


ROWS = _readme_tables()


def test_the_readme_tables_were_found() -> None:
    assert {svc for svc, *_ in ROWS} >= {"ingest", "notify"}


@pytest.mark.parametrize(("svc", "var", "written", "row"), ROWS,
                         ids=[f"{svc}:{var}" for svc, var, *_ in ROWS])
def test_readme_table_default_matches_the_code(svc: str, var: str, written: str,
                                               row: str) -> None:
    known = _defaults()
    assert var in known, f"{svc}/README.md names {var}, which is no setting: {row}"
    assert _same(written, known[var]), f"{svc}/README.md: {var} default {written!r}, the " \
                                       f"code has {known[var]!r}"
