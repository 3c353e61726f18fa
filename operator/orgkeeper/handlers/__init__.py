"""kopf wiring: thin handlers that parse, call a controller or the domain, and post Events.

`register` decorates them into the registry that `orgkeeper run` hands to kopf.
"""

from __future__ import annotations

import kopf

from . import admission, indexes, organization, startup


def register(registry: kopf.OperatorRegistry) -> None:
    startup.register(registry)
    indexes.register(registry)
    organization.register(registry)
    admission.register(registry)
