"""What every org namespace enforces, and when its quota needs the operator: a Pod Security
level (labels on the namespace) and a quota on its Memberships (a ResourceQuota
kube-controller-manager counts). kube.py applies them; these rules say what is right."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from ..api.v1alpha1 import GROUP

POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
POD_SECURITY_ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
QUOTA_NAME = "orgkeeper"
MEMBERSHIP_COUNT = f"count/memberships.{GROUP}"

# How long a quota may go uncounted before it is made anew (kube-controller-manager counts a new
# one within a second once it knows the resource).
QUOTA_COUNT_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class Guardrails:
    """A Pod Security level and a Membership quota (`--pod-security`, `--membership-quota`)."""

    pod_security: str
    membership_quota: int

    def labels(self) -> dict[str, str]:
        return {POD_SECURITY_ENFORCE: self.pod_security, POD_SECURITY_ENFORCE_VERSION: "latest"}

    def pod_security_differs(self, labels: Mapping[str, str]) -> bool:
        """The namespace's `labels` lack or change a Pod Security label of ours."""
        return any(labels.get(key) != value for key, value in self.labels().items())

    def hard(self) -> dict[str, str]:
        return {MEMBERSHIP_COUNT: str(self.membership_quota)}


@dataclass(frozen=True)
class QuotaSeen:
    """The org namespace's quota as read: its limit, kube-controller-manager's status (None
    before its first sync) and its age."""

    hard: Mapping[str, str]
    status_hard: Mapping[str, str] | None
    used: Mapping[str, str] | None
    age: timedelta

    def counts(self, hard: Mapping[str, str]) -> bool:
        """kube-controller-manager has counted the Memberships under the limit `hard`."""
        return MEMBERSHIP_COUNT in (self.used or {}) and same_quantities(self.status_hard, hard)

    def uncounted(self, hard: Mapping[str, str]) -> bool:
        """kube-controller-manager took in the limit but counted no Memberships: it did not
        know the resource yet when it synced this quota."""
        return (
            self.status_hard is not None
            and same_quantities(self.status_hard, hard)
            and MEMBERSHIP_COUNT not in (self.used or {})
        )

    def to_remake(self, hard: Mapping[str, str]) -> bool:
        """Uncounted past the grace: kube-controller-manager counts a custom resource only once
        its discovery (every 30 s) found it, and a quota made before that waits for the 5-minute
        resync; a new quota is counted at once."""
        return self.uncounted(hard) and self.age > QUOTA_COUNT_GRACE

    def limit_differs(self, hard: Mapping[str, str]) -> bool:
        return not same_quantities(self.hard, hard)


def same_quantities(found: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    """The API server writes quantities in canonical form: 10000 comes back as 10k."""
    found = found or {}
    return found.keys() == wanted.keys() and all(
        quantity(found[key]) == quantity(value) for key, value in wanted.items()
    )


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))([a-zA-Z]*|[eE][+-]?\d+)")


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity's value ("10k", "1Ki", "1e3", "500m"); ValueError if it is none."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = Decimal(match[1]), match[2]
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        return number.scaleb(int(suffix[1:]))
    raise ValueError(f"not a quantity: {text!r}")
