"""kopf wiring: thin handlers that parse, call a controller or the domain, and post Events.

`register` decorates them into the registry that `orgkeeper run` hands to kopf.
"""

from __future__ import annotations

import kopf

from ..settings import Settings
from . import admission, indexes, mutation, organization, startup


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    startup.register(registry)
    indexes.register(registry)
    organization.register(registry)
    if settings.webhook_mode != "off":
        admission.register(registry)
        mutation.register(registry)
