"""kopf wiring: thin handlers that parse, call a controller or the domain, and post Events.

`register_always_on` and `register_leader_only` decorate them into the registries of the
operator's two kopf parts (manager.py).
"""

from __future__ import annotations

import kopf

from ..settings import Settings
from . import admission, indexes, mutation, organization, startup


def register_always_on(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """What every replica runs, leader or not: admission (and the startup of the caches and
    endpoints)."""
    startup.register_always_on(registry)
    if settings.webhook_mode != "off":
        admission.register(registry)
        mutation.register(registry)


def register_leader_only(registry: kopf.OperatorRegistry) -> None:
    """What only the Lease holder runs: the reconcile loops, the event handlers, the indexes."""
    startup.register_leader_only(registry)
    indexes.register(registry)
    organization.register(registry)
