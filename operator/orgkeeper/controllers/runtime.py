"""What every reconcile needs at hand: the API adapter, the settings, and the wake-up calls."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..kube import KubeApi
from ..settings import Settings


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object, or on `involved` when given."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    involved: Mapping[str, Any] | None = None


@dataclass
class Runtime:
    kube: KubeApi
    settings: Settings
    signing_key: Ed25519PrivateKey | None = None  # loaded (or created) at startup
    # One wake-up per Organization: anything that touches an org sets it, its loop reconciles.
    triggers: dict[str, asyncio.Event] = field(default_factory=dict)

    def trigger(self, organization: str) -> asyncio.Event:
        return self.triggers.setdefault(organization, asyncio.Event())

    def poke(self, organization: str) -> None:
        self.trigger(organization).set()

    def serves_region(self, region: str | None) -> bool:
        return self.settings.region is None or self.settings.region == region
