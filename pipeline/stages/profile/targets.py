"""Profile targets and their latency limits: `targets: [host, pi4, tag:lab]`,
`max_latency_ms: 5 | {host: 5, pi4: 9, tag:lab: 12}`. Pure checks, no inventory read here."""

from __future__ import annotations

import re

from pipeline.errors import UserError, did_you_mean

_TARGET = re.compile(r"^(host|tag:[A-Za-z0-9][A-Za-z0-9_.-]*|[A-Za-z0-9][A-Za-z0-9_.-]*)$")


def check_target(t: str) -> str:
    if not _TARGET.match(t):
        raise ValueError(f"Expected a target: host, a device name or tag:<tag>. Received: {t!r}")
    return t


def limit_for(limits: float | dict[str, float] | None, name: str, tags: tuple[str, ...] = (),
              fallback: float | None = None) -> float | None:
    """The max_latency_ms that applies to a target: its own, else one of its tags', else a number
    that applies to all, else the recipe's gate."""
    if isinstance(limits, dict):
        if name in limits:
            return limits[name]
        found = [limits[f"tag:{t}"] for t in tags if f"tag:{t}" in limits]
        return min(found) if found else fallback
    return limits if limits is not None else fallback


def unknown_limit_key(limits: dict[str, float], targets: list[str],
                      names: list[str] | None = None) -> str | None:
    """Why a key of a per-target max_latency_ms names no target (None: every key does).
    `names`: the boards the targets resolve to (from the inventory); without them a plain name
    may still be a board of a `tag:` target, so it passes until the inventory is read."""
    allowed = [*targets, *(names or [])]
    tagged = names is None and any(t.startswith("tag:") for t in targets)
    for k in limits:
        if k not in allowed and not (tagged and k != "host" and not k.startswith("tag:")):
            return (f"{k!r} is not one of the targets{did_you_mean(k, allowed)}; targets: "
                    f"{', '.join(allowed)}")
    return None


def check_limit_keys(limits: dict[str, float], targets: list[str], names: list[str]) -> None:
    why = unknown_limit_key(limits, targets, names)
    if why:
        raise UserError(f"profile.max_latency_ms: {why}")
