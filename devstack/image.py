"""Build the secmsg image from the Dockerfile without a registry: buildah on a debootstrap base.

    uv run --frozen python -m devstack.image          # build (or reuse) and print the result

The Dockerfile's default base is the official Python image (``python:3.11-slim-bookworm``);
where no registry is reachable (CI here, an air-gapped build host) the base is made locally:

1. ``debootstrap --variant=minbase bookworm`` from the machine's own Debian mirror, with
   Debian's Python 3.11 and the CA certificates (nothing else: no compiler), imported with
   ``buildah from scratch`` + mount + copy + commit as ``localhost/secmsg-base:<BASE_TAG>``.
   Cached by that tag: later builds reuse it in seconds (bump BASE_VERSION to remake it).
2. The uv stage (``ghcr.io/astral-sh/uv`` upstream) is this machine's own ``uv`` binary in a
   scratch image, ``localhost/secmsg-uv:<uv version>``.
3. ``buildah bud --isolation chroot --layers`` of the Dockerfile with those as build
   arguments (``PYTHON_IMAGE``, ``PYTHON``, ``UV_IMAGE``), the version and git revision as
   labels; the uv download cache is a build cache mount, so a warm rebuild after a source
   change reinstalls only our own packages.
4. The SBOM (CycloneDX 1.5 JSON) of the locked runtime packages, from ``uv.lock`` with
   ``uv export --format cyclonedx1.5 --no-dev``, beside the image's OCI archive in
   ``~/.cache/secmsg/images/``.

``--isolation chroot`` because the default OCI runtime isolation does not work inside this
sandbox (no user namespaces); on a normal host either works. Needs root (debootstrap).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from devstack.servers import say

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
# Bump when the base's package list or layout changes: the tag names the cached base.
BASE_VERSION = 1
BASE_PACKAGES = ("python3", "ca-certificates")
BASE_TAG = f"{SUITE}-minbase-py311-v{BASE_VERSION}"
BASE_IMAGE = f"localhost/secmsg-base:{BASE_TAG}"
PYTHON = "/usr/bin/python3.11"  # Debian's interpreter in the base (the official image: /usr/local)
IMAGE = "localhost/secmsg"
ISOLATION = ("--isolation", "chroot")
# What the build reads from the environment (besides SSL_CERT_FILE); the image test also
# reads SECMSG_IMAGE_TESTS (0: leave it out).
BUILD_VARIABLES = ("SECMSG_DEBIAN_MIRROR", "SECMSG_IMAGE_CACHE", "SECMSG_IMAGE_TESTS")


def image_cache() -> Path:
    return Path(os.environ.get("SECMSG_IMAGE_CACHE", Path.home() / ".cache/secmsg/images"))


def tools_present() -> bool:
    """buildah and debootstrap installed, and root (debootstrap needs it)."""
    return bool(shutil.which("buildah") and shutil.which("debootstrap")) and os.geteuid() == 0


def _run(*cmd: str, timeout: float = 1800, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout,
                          cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return str(proc.stdout)


def image_exists(name: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", name],
                          capture_output=True, check=False, timeout=60).returncode == 0


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (SECMSG_DEBIAN_MIRROR overrides it)."""
    if os.environ.get("SECMSG_DEBIAN_MIRROR"):
        return os.environ["SECMSG_DEBIAN_MIRROR"]
    texts = [p.read_text(errors="replace") for p in
             [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
             if p.is_file()]
    for text in texts:
        # one-line format "deb URI SUITE ..." and deb822 "URIs: URI" (with "Suites: SUITE")
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M):
            return m.group(1)
        for stanza in text.split("\n\n"):
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uri and suites and SUITE in suites.group(1).split():
                return uri.group(1)
    return "http://deb.debian.org/debian"


def ensure_base() -> str:
    """The debootstrap base image, made once per BASE_TAG."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    mirror = debian_mirror()
    say(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) from {mirror} ...")
    image_cache().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=image_cache()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(rootfs), mirror)
        # apt's downloads and lists are not part of the base
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        ctr = _run("buildah", "from", "scratch").strip()
        try:
            mnt = _run("buildah", "mount", ctr).strip()
            _run("cp", "-a", f"{rootfs}/.", mnt)
            _run("buildah", "umount", ctr)
            _run("buildah", "config", "--env",
                 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--env", "LANG=C.UTF-8", "--cmd", "/bin/sh",
                 "--label", f"org.opencontainers.image.description=Debian {SUITE} minbase "
                            f"+ {' '.join(BASE_PACKAGES)} (debootstrap from {mirror})", ctr)
            _run("buildah", "commit", "--quiet", ctr, BASE_IMAGE)
        finally:
            subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False, timeout=60)
    return BASE_IMAGE


def uv_version() -> str:
    return _run("uv", "--version").split()[1]


def ensure_uv_image() -> str:
    """This machine's uv in a scratch image: the Dockerfile's ``uv`` stage."""
    name = f"localhost/secmsg-uv:{uv_version()}"
    if image_exists(name):
        return name
    uv, uvx = shutil.which("uv"), shutil.which("uvx")
    if not uv or not uvx:
        raise RuntimeError("uv and uvx must be on PATH")
    ctr = _run("buildah", "from", "scratch").strip()
    try:
        _run("buildah", "copy", "--chmod", "0755", ctr, uv, "/uv")
        _run("buildah", "copy", "--chmod", "0755", ctr, uvx, "/uvx")
        _run("buildah", "commit", "--quiet", ctr, name)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False, timeout=60)
    return name


def project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def git_revision() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=30)
    rev = proc.stdout.strip() if proc.returncode == 0 else "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=False, timeout=30).stdout
    return rev + ("-dirty" if dirty.strip() else "")


def write_sbom(path: Path) -> Path:
    """CycloneDX 1.5 JSON of the packages the image installs: uv.lock without dev groups."""
    out = _run("uv", "export", "--frozen", "--no-dev",
               "--format", "cyclonedx1.5", "--quiet", cwd=ROOT)
    json.loads(out)  # refuse to write something that is not JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out)
    return path


@dataclass(frozen=True)
class Built:
    image: str
    base: str
    sbom: Path
    version: str
    revision: str
    seconds: float


def build(tag: str | None = None) -> Built:
    """Build (incrementally: buildah's layer cache) and return what was built."""
    t0 = time.monotonic()
    base = ensure_base()
    uv_image = ensure_uv_image()
    version, revision = project_version(), git_revision()
    image = f"{IMAGE}:{tag or version}"
    say(f"buildah bud {image} on {base} ...")
    # Behind a TLS-intercepting proxy PyPI's certificate is signed by a CA only this machine
    # trusts: lend its bundle to the build as a secret (not kept in any layer).
    ca = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    secret: tuple[str, ...] = ("--secret", f"id=build_ca,src={ca}") if ca.is_file() else ()
    before = _containers()
    try:
        _bud(base, uv_image, version, revision, image, secret)
    finally:
        # bud leaves a working container behind for a stage used only by COPY --from (uv);
        # remove what this build made, nothing else.
        for ctr in _containers() - before:
            subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False,
                           timeout=60)
    sbom = write_sbom(image_cache() / f"secmsg-{version}.cdx.json")
    return Built(image, base, sbom, version, revision, time.monotonic() - t0)


def _containers() -> set[str]:
    return set(_run("buildah", "containers", "--quiet").split())


def _bud(base: str, uv_image: str, version: str, revision: str, image: str,
         secret: tuple[str, ...]) -> None:
    _run("buildah", "bud", *ISOLATION, "--layers", "--format", "docker", "--quiet", *secret,
         "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"PYTHON={PYTHON}",
         "--build-arg", f"UV_IMAGE={uv_image}",
         "--build-arg", f"VERSION={version}", "--build-arg", f"REVISION={revision}",
         "--tag", image, "--file", str(ROOT / "Dockerfile"), str(ROOT), cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", help="image tag (default: the project version)")
    args = ap.parse_args()
    if not tools_present():
        sys.exit("needs root, buildah and debootstrap: apt-get install -y buildah debootstrap")
    b = build(args.tag)
    print(f"{b.image}  (base {b.base}, revision {b.revision}, {b.seconds:.0f} s)\n"
          f"SBOM: {b.sbom}\n"
          f"run:  buildah run --isolation chroot $(buildah from {b.image}) "
          "python -m secmsg.ingest --help")


if __name__ == "__main__":
    main()
