"""Fixtures for the offline deployment checks: a cached kustomize binary and rendered overlays.

No container engine or cluster runs here, so the manifests are rendered with the real
kustomize (built once from the Go module proxy and cached like the dev servers, under
``~/.cache/secmsg/bin/kustomize-<version>/``) and checked with ``kubeconform -strict`` against
the Kubernetes and CRD schemas, offline (devstack/kubeconform.py, test_kubeconform.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.servers import bin_cache

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
KUSTOMIZE_VERSION = "v5.8.1"
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"


def ensure_kustomize() -> Path:
    """Build kustomize once with ``go install`` and return the cached binary."""
    target = bin_cache() / f"kustomize-{KUSTOMIZE_VERSION}"
    binary = target / "kustomize"
    if binary.exists():
        return binary
    if not shutil.which("go"):
        raise RuntimeError("Go is needed to build kustomize once (apt-get install golang)")
    bin_cache().mkdir(parents=True, exist_ok=True)
    # Build into a private directory, then move into place: a concurrent run never sees a
    # half-written binary.
    tmp = Path(tempfile.mkdtemp(prefix=".kustomize-build-", dir=bin_cache()))
    try:
        proc = subprocess.run(["go", "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
                              env={**os.environ, "GOBIN": str(tmp)}, capture_output=True,
                              text=True, check=False, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"building kustomize failed:\n{proc.stderr[-4000:]}")
        target.mkdir(parents=True, exist_ok=True)
        (tmp / "kustomize").replace(binary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([str(ensure_kustomize()), "build", str(path)], capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, f"kustomize build {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay (and the base) rendered by kustomize: name -> resources."""
    out = {name: kustomize_build(K8S / "overlays" / name) for name in OVERLAYS}
    out["base"] = kustomize_build(K8S / "base")
    return out


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())
