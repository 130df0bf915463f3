"""Every physical name and construct id comes from here."""

from __future__ import annotations

APP = "billow"


def name(stage: str, concern: str) -> str:
    """`billow-prod-api`: stable, readable, unique per stage."""
    return f"{APP}-{stage}-{concern}"
