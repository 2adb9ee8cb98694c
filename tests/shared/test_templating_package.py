"""The shipped default templates (and the frame's stylesheet) are package data: they must be in
the built wheel, not only in the source tree, or an installed service has no defaults."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from secmsg.shared import templating

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "shared/secmsg/shared/templating/defaults"


def test_every_kind_default_is_a_file_beside_the_renderer() -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in DEFAULTS.iterdir()}
    assert len(files) == len(templating.KINDS)
    for kind in templating.KINDS.values():
        assert kind.default in files.values(), kind.name


def test_the_shared_wheel_ships_the_default_templates(tmp_path: Path) -> None:
    subprocess.run(["uv", "build", "--package", "secmsg-shared", "--wheel", "-o", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    (wheel,) = tmp_path.glob("secmsg_shared-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        shipped = {n: zf.read(n).decode("utf-8") for n in names
                   if n.startswith("secmsg/shared/templating/defaults/")}
    assert "secmsg/shared/templating/email.css" in names  # the frame's stylesheet
    assert sorted(Path(n).name for n in shipped) == sorted(p.name for p in DEFAULTS.iterdir())
    for kind in templating.KINDS.values():
        assert kind.default in shipped.values(), kind.name
