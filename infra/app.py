#!/usr/bin/env python3
"""CDK entry point (`make synth`, `make deploy`). Works offline: no credentials, no Docker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "shared")]

import aws_cdk as cdk  # noqa: E402
from billow_infra.packaging import stage_missing_dependencies_layer, stage_shared_layer  # noqa: E402
from billow_infra.stack import BillowStack  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402


def build_app(outdir: str | None = None, context: dict[str, str] | None = None) -> tuple[cdk.App, BillowStack]:
    app = cdk.App(outdir=outdir, context=context or {})
    stage = app.node.try_get_context("stage") or "dev"
    staging = Path(app.outdir) / ".staging"
    deps = app.node.try_get_context("dependencies_layer")
    deps_dir = Path(deps).resolve() if deps else stage_missing_dependencies_layer(staging)
    stack = BillowStack(
        app,
        f"Billow-{stage}",
        stage=stage,
        shared_layer_dir=stage_shared_layer(staging),
        dependencies_layer_dir=deps_dir,
        description="Billow: serverless subscription billing",
    )
    if not deps:
        cdk.Annotations.of(stack).add_warning_v2(
            "billow:dependencies-layer", "dependencies layer not built: run `make lambda-deps` before deploying"
        )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def write_local_definitions() -> None:
    """`make definitions`: synthesize (in a scratch directory) and write the artifacts of the state
    machines the local stack runs (billow.local.stepfunctions.write_definitions)."""
    import json
    import tempfile

    from billow.local.stepfunctions import LOCAL_STAGE, write_definitions

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "deps" / "python").mkdir(parents=True)
        context = {"stage": LOCAL_STAGE, "dependencies_layer": str(Path(scratch) / "deps")}
        app, stack = build_app(outdir=str(Path(scratch) / "cdk.out"), context=context)
        app.synth()
        template = json.loads((Path(app.outdir) / stack.template_file).read_text())
    for path in write_definitions(template, LOCAL_STAGE):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    if sys.argv[1:] == ["--definitions"]:
        write_local_definitions()
    else:
        # The CDK CLI passes CDK_OUTDIR; `make synth` runs this file directly and writes cdk.out/.
        build_app(outdir=os.environ.get("CDK_OUTDIR", str(ROOT / "cdk.out")))[0].synth()
