"""What the policy reads of a workload (the controllers' WorkloadRecord is one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Workload(Protocol):
    """A Deployment, StatefulSet or DaemonSet labelled with an org, as the cache holds it."""

    @property
    def uid(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def ref(self) -> str: ...  # <namespace>/<name>
    @property
    def component(self) -> str: ...
    @property
    def product(self) -> str: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def frozen(self) -> bool: ...
    @property
    def decommissioned(self) -> bool: ...  # annotated orgkeeper.dev/decommissioned
