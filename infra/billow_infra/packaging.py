"""Lambda code assets, staged at synth time without Docker or network.

- functions/ is the handlers' code asset as it is.
- shared/billow becomes a layer (python/billow/...), copied into a staging folder.
- Third-party dependencies are a second layer built by `make lambda-deps` (pip, manylinux wheels).
  Synth without it still works (tests, reviews) but records a warning: deploy always builds it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = REPO_ROOT / "functions"
SHARED_PACKAGE = REPO_ROOT / "shared" / "billow"
ASSET_EXCLUDES = ["__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache"]


def stage_shared_layer(staging_root: Path) -> Path:
    """Copy the billow package to <staging_root>/shared-layer/python/billow (Lambda layer layout)."""
    layer = staging_root / "shared-layer"
    if layer.exists():
        shutil.rmtree(layer)
    shutil.copytree(
        SHARED_PACKAGE, layer / "python" / "billow", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    )
    return layer


def stage_missing_dependencies_layer(staging_root: Path) -> Path:
    layer = staging_root / "dependencies-layer-not-built"
    (layer / "python").mkdir(parents=True, exist_ok=True)
    (layer / "python" / "README.txt").write_text("Run `make lambda-deps` before deploying: this layer is empty.\n")
    return layer
