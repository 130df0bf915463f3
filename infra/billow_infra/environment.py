"""What a Billow function finds in its environment on Lambda besides what Lambda itself sets.

Free of CDK so that bench/cold_start.py imports the handlers under the very environment the
functions get (billow_infra.functions adds each function's invoke targets to it).
"""

from __future__ import annotations

SERVICE = "billow"
METRICS_NAMESPACE = "Billow"


def function_environment(table_name: str) -> dict[str, str]:
    """Every function's environment: its table and Powertools' settings."""
    return {
        "BILLOW_TABLE": table_name,
        "POWERTOOLS_SERVICE_NAME": SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
