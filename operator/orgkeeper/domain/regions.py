"""Regional operators sharing a cluster: which of them may write where."""

from __future__ import annotations

from collections.abc import Mapping

from .. import names


def marks_pending_here(
    region: str | None, namespace_labels: Mapping[str, str], served_here: bool
) -> bool:
    """Whether this operator marks the Memberships of an org-<name> Pending once the API server
    said no Organization <name> exists. An operator of every region may. A regional one only
    where it positively knows the namespace is of its region: labelled
    orgkeeper.dev/region=<its region> (by whoever made it ahead), or the namespace of an org
    its own loop served until it was deleted. "Not in my cache" is never enough: the cache may
    lag, and an org that isn't there may be another region's."""
    if region is None or served_here:
        return True
    return namespace_labels.get(names.LABEL_REGION) == region
