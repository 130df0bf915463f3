#!/usr/bin/env python3
"""Cold-start benchmark: how long importing each Lambda handler takes, as Lambda imports it.

For every handler module under functions/ (each `functions/<name>/handler.py`, discovered, so a new
function is measured as soon as it exists), a fresh interpreter runs `python -X importtime -c
"import <name>.handler"`; the handler's import time is the cumulative figure `-X importtime` gives
its module (everything its import pulled in). Each handler is measured `--runs` times, interleaved
with a bare `import boto3` measured the same way in the same run; the medians are printed with
their ratio to boto3's, so figures from a loaded machine can still be compared, and each handler
is judged against the target (300 ms): the exit status is 1 when one misses it (unless
`--no-fail`).

    .venv/bin/python bench/cold_start.py [--runs 5] [--target-ms 300] [--no-fail] [--handler api]

The API imports each route area (catalog, contacts, actions...: functions/api/areas.py) on a
container's first request in it, so its cold start is the handler's import plus that area's. Those
are printed too, for information (the target is the handler's): what each area's first request adds
(the imports it triggers, `-X importtime` top-level figures after the handler's), and the whole app
(every area loaded, as a container that has served them all holds).

The interpreter sees what a function sees on Lambda:
- the code as it is deployed: functions/ and the billow layer staged by the infra's own packaging
  (billow_infra.packaging: without bytecode caches and without billow.local), imported without
  writing bytecode (Lambda's code is read-only), so Billow's modules compile at every cold start
  as they do there; third-party packages come from this interpreter's site-packages, compiled;
- Lambda's own variables (LAMBDA_TASK_ROOT: Powertools' Tracer is on, as `Tracing.ACTIVE` makes
  it, and patches what it traces) and the functions' environment (billow_infra.environment).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra")]

from billow_infra.environment import function_environment  # noqa: E402
from billow_infra.packaging import ASSET_EXCLUDES, FUNCTIONS_DIR, stage_shared_layer  # noqa: E402

TARGET_MS = 300.0
BASELINE = "boto3"


def handler_modules(functions_dir: Path = FUNCTIONS_DIR) -> list[str]:
    """Every Lambda handler module: `<function>.handler` for each functions/<function>/handler.py."""
    return sorted(f"{path.parent.name}.handler" for path in functions_dir.glob("*/handler.py"))


def stage(root: Path) -> tuple[Path, Path]:
    """The functions asset and the billow layer as deployed: (task root, layer's python dir)."""
    task_root = root / "task"
    shutil.copytree(FUNCTIONS_DIR, task_root, ignore=shutil.ignore_patterns(*ASSET_EXCLUDES))
    return task_root, stage_shared_layer(root) / "python"


def lambda_environment(task_root: Path, layer: Path, module: str) -> dict[str, str]:
    """The variables Lambda sets for the function of `module`, then the functions' own."""
    function = module.split(".")[0]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": os.pathsep.join([str(task_root), str(layer)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.14",
        "AWS_LAMBDA_FUNCTION_NAME": f"billow-bench-{function.replace('_', '-')}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "_HANDLER": f"{module}.lambda_handler",
        **function_environment("billow-bench"),
    }


def import_time_us(module: str, env: Mapping[str, str], cwd: Path) -> int:
    """`-X importtime`'s cumulative time for importing `module` in a fresh interpreter, in µs."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"importing {module} failed:\n{run.stderr[-4000:]}")
    return cumulative_us(run.stderr, module)


def cumulative_us(importtime_report: str, module: str) -> int:
    """The cumulative µs `-X importtime` reports for `module` (its last line for that module: the
    outermost import, which includes its parent packages')."""
    found: int | None = None
    for line in importtime_report.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[2].strip() == module:
            found = int(fields[1])
    if found is None:
        raise SystemExit(f"-X importtime reported no import of {module}")
    return found


def imported_after_us(importtime_report: str, module: str) -> int:
    """The cumulative µs of every top-level import after `module`'s own (what the code run after
    importing it imported)."""
    total, seen = 0, False
    for line in importtime_report.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or fields[2].startswith("  "):
            continue  # the header, or a nested import (counted in its parent's cumulative)
        if seen:
            total += int(fields[1])
        seen = seen or fields[2].strip() == module
    if not seen:
        raise SystemExit(f"-X importtime reported no import of {module}")
    return total


def area_import_us(areas: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    """What loading `areas` imports after a fresh `import api.handler`, in µs."""
    code = f"import api.handler as api; api.areas.load({list(areas)!r})"
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=dict(env), cwd=cwd, capture_output=True, text=True
    )
    if run.returncode != 0:
        raise SystemExit(f"loading the API's areas {areas} failed:\n{run.stderr[-4000:]}")
    return imported_after_us(run.stderr, "api.handler")


def measure_areas(runs: int) -> dict[str, list[float]]:
    """Each API route area's first-request imports in ms, and every area's together ("all")."""
    sys.path[:0] = [str(FUNCTIONS_DIR)]
    from api.areas import AREAS

    groups = {**{area: [area] for area in AREAS}, "all": list(AREAS)}
    times: dict[str, list[float]] = {name: [] for name in groups}
    with tempfile.TemporaryDirectory(prefix="billow-cold-start-") as tmp:
        task_root, layer = stage(Path(tmp))
        env = lambda_environment(task_root, layer, "api.handler")
        for _ in range(runs):
            for name, areas in groups.items():
                times[name].append(area_import_us(areas, env, task_root) / 1000)
    return times


def measure(modules: Sequence[str], runs: int) -> dict[str, list[float]]:
    """Each module's import times in ms (plus the baseline's), `runs` rounds interleaved."""
    times: dict[str, list[float]] = {name: [] for name in (BASELINE, *modules)}
    with tempfile.TemporaryDirectory(prefix="billow-cold-start-") as tmp:
        task_root, layer = stage(Path(tmp))
        for _ in range(runs):
            for name in times:
                env = lambda_environment(task_root, layer, name)
                times[name].append(import_time_us(name, env, task_root) / 1000)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per handler (median taken)")
    parser.add_argument("--target-ms", type=float, default=TARGET_MS, help="the most a handler may take")
    parser.add_argument("--no-fail", action="store_true", help="report only: exit 0 even when a handler misses")
    parser.add_argument("--handler", action="append", default=[], help="measure only this function (repeatable)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    modules = handler_modules()
    if args.handler:
        unknown = sorted({f"{name}.handler" for name in args.handler} - set(modules))
        if unknown:
            parser.error(f"no such handler: {', '.join(unknown)} (there are {', '.join(modules)})")
        modules = [m for m in modules if m.split(".")[0] in args.handler]

    times = measure(modules, args.runs)
    baseline = statistics.median(times[BASELINE])
    print(f"Import time, -X importtime cumulative, median of {args.runs} fresh interpreters (Lambda's environment)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"command: {shlex.join([sys.executable, *sys.argv])}; Python {sys.version.split()[0]} (Lambda runs 3.14)")
    print(f"machine: {os.cpu_count()} cores, load average {load} (load inflates every figure: compare ratios)")
    print(f"{'module':<24}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'x boto3':>9}  target {args.target_ms:g} ms")
    missed = []
    for name, samples in times.items():
        median = statistics.median(samples)
        if name == BASELINE:
            verdict = "(baseline)"
        else:
            verdict = "PASS" if median <= args.target_ms else "FAIL"
            if verdict == "FAIL":
                missed.append(name)
        ratio = median / baseline
        print(f"{name:<24}{median:>10.1f}{min(samples):>9.1f}{max(samples):>9.1f}{ratio:>9.2f}  {verdict}")
    if "api.handler" in times:
        api = statistics.median(times["api.handler"])
        print("api.handler's route areas, imported on a container's first request in each (information):")
        print(f"{'area':<24}{'median ms':>10}{'min ms':>9}{'max ms':>9}  {'+ api.handler':>13}")
        for area, samples in measure_areas(args.runs).items():
            median = statistics.median(samples)
            label = "all (the complete app)" if area == "all" else area
            print(f"{label:<24}{median:>10.1f}{min(samples):>9.1f}{max(samples):>9.1f}  {api + median:>13.1f}")
    if missed:
        print(f"FAIL: {', '.join(missed)} over {args.target_ms:g} ms")
        return 0 if args.no_fail else 1
    print(f"PASS: every handler imports in at most {args.target_ms:g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
