"""Names, labels and annotations that orgkeeper writes: the vocabulary of its objects."""

from __future__ import annotations

import hashlib

# The API group and version of orgkeeper's kinds, and their plurals. Here rather than in api/,
# so that the `orgkeeper` commands' light client (client.py) can use them without pydantic.
GROUP = "orgkeeper.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
ORGANIZATIONS = "organizations"
MEMBERSHIPS = "memberships"
LICENSES = "licenses"

MANAGED_BY = "orgkeeper"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# The user-name prefix of the cluster's OIDC authenticator (`--sso-username-prefix`'s default).
SSO_USERNAME_PREFIX = "oidc:"
LABEL_ORGANIZATION = "orgkeeper.dev/organization"
# The UID of the Organization a namespace (made, adopted or served by label), a License, a
# license Secret or the Owner's RBAC is for: an org is its UID, a name can be reused.
LABEL_ORGANIZATION_UID = "orgkeeper.dev/organization-uid"
# On a namespace an Organization held and released when it was deleted: the org's name. Only
# support hands it to another Organization (see README, "How a namespace joins an org").
LABEL_RELEASED_FROM = "orgkeeper.dev/released-from"
LABEL_EMAIL_HASH = "orgkeeper.dev/email-hash"
LABEL_MEMBERSHIP = "orgkeeper.dev/membership"
LABEL_TEAM = "orgkeeper.dev/team"
LABEL_COMPONENT = "orgkeeper.dev/component"
LABEL_PRODUCT = "orgkeeper.dev/product"
# On an org-<name> made ahead: the region whose operator marks its Memberships Pending while no
# Organization <name> exists (domain/regions.py). Also on a regional operator's own Pods.
LABEL_REGION = "orgkeeper.dev/region"
ANNOTATION_FROZEN = "orgkeeper.dev/frozen"
# On a control plane that reappeared in a deactivated org: scaled to 0 once, never deleted again.
ANNOTATION_DECOMMISSIONED = "orgkeeper.dev/decommissioned"
ANNOTATION_LICENSE_FINGERPRINT = "orgkeeper.dev/license-fingerprint"
# The org's shard slot (shard_slot): on everything of an org, so that a shard (--shard i/N) lists
# and watches only its orgs' objects, selected by the API server. Reserved: only the operator
# (and its admission webhook, which stamps it) sets it.
LABEL_SHARD_SLOT = "orgkeeper.dev/shard-slot"
SHARD_SLOTS = 256
LABEL_PART_OF = "app.kubernetes.io/part-of"
PART_OF = "orgkeeper"
# On every leader-election Lease orgkeeper takes: its scope (`orgkeeper`, `orgkeeper-<region>`),
# so that the fence of shard counts and the start-up check of scopes list orgkeeper's Leases
# only, selected by the API server (leader.py).
LABEL_LEASE = "orgkeeper.dev/lease"

# What the API server selects for the operator (label and field selectors): it lists and watches
# only these. The label keys are reserved by the policies of manifests/policies/.
WORKLOAD_SELECTOR = LABEL_ORGANIZATION  # workloads labelled for an org (any org)
MEMBER_BINDING_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_MEMBERSHIP}"
NAMESPACE_SELECTOR = LABEL_ORGANIZATION
CRD_SELECTOR = f"{LABEL_PART_OF}={PART_OF}"  # kopf notices orgkeeper's own CRDs only
LEASE_SELECTOR = LABEL_LEASE  # orgkeeper's Leases in its namespace, of every scope and count
# Organizations carry spec.region as a selectable field (crds/): a regional operator's kopf
# watches only its region's.
REGION_FIELD = "spec.region"


def region_selector(region: str) -> str:
    return f"{REGION_FIELD}={region}"


def kopf_prefix(region: str | None) -> str:
    """Where kopf keeps its finalizer and annotations: `orgkeeper.dev` serving every region,
    `<region>.orgkeeper.dev` serving one. Regional operators sharing a cluster then never hold
    a finalizer on another region's Organization, and kopf never removes one it doesn't need."""
    return f"{region}.{GROUP}" if region else GROUP


def finalizer(region: str | None) -> str:
    return f"{kopf_prefix(region)}/finalizer"


# kopf names both webhook configurations by the prefix of an all-regions operator; regional ones
# share them (admission is region-independent).
WEBHOOK_CONFIGURATION = kopf_prefix(None)


def stale_finalizers(found: list[str], region: str | None) -> list[str]:
    """orgkeeper finalizers on an org of `region` other than this operator's: left by an
    operator of the other kind (all regions, or regional) that ran before this one. The two
    kinds never run together (their Leases exclude each other), so no one else needs them."""
    own, all_regions = finalizer(region), finalizer(None)
    return [f for f in found if f != own and (f == all_regions or f.endswith(f".{all_regions}"))]


COMPONENT_CONTROL_PLANE = "control-plane"
COMPONENT_DATA_PLANE = "data-plane"


def org_namespace(organization: str) -> str:
    return f"org-{organization}"


# A namespace name is a DNS label (at most 63 characters), so org-<name> leaves 59 for the name.
ORGANIZATION_NAME_MAX = 63 - len(org_namespace(""))
ORGANIZATION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def organization_of_namespace(namespace: str | None) -> str | None:
    prefix = org_namespace("")
    return namespace[len(prefix) :] if namespace and namespace.startswith(prefix) else None


def email_hash(email: str) -> str:
    """First 16 hex digits of sha256 of the lower-cased e-mail (the label value)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


def shard_slot(organization: str) -> int:
    """The org's slot, 0..SHARD_SLOTS-1: from sha256 of its name (an org's objects all live in
    or name org-<name>, so each knows its slot without a lookup; FNV's top bits, which the API
    server's sharded list/watch hashes, are skewed on sequential names)."""
    return int(hashlib.sha256(organization.encode()).hexdigest()[:8], 16) % SHARD_SLOTS


def shard_slot_label(organization: str) -> dict[str, str]:
    return {LABEL_SHARD_SLOT: str(shard_slot(organization))}


def shard_map(region: str | None, count: int) -> str:
    """The ConfigMap (in the operator's namespace) holding which shard of `count` serves each
    slot: written once by the first shard of that count to start, then only read."""
    return f"orgkeeper-{region}-shards-of-{count}" if region else f"orgkeeper-shards-of-{count}"


SHARD_MAP_COUNT = "count"
SHARD_MAP_SLOTS = "slots"


def same_email(a: str | None, b: str | None) -> bool:
    """E-mails compare as their hash label does: ignoring case and surrounding spaces."""
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def email_of_user(user: str, sso_prefix: str) -> str:
    """The e-mail behind a Kubernetes user name: the identity provider's `<sso_prefix><e-mail>`
    without its prefix, a bare e-mail as it is."""
    return user[len(sso_prefix) :] if sso_prefix and user.startswith(sso_prefix) else user


def team_cluster_role(team: str) -> str:
    """The ClusterRole shipped in manifests/ for a team."""
    return f"orgkeeper-{team}"


def member_binding(email: str, team: str) -> str:
    """RoleBinding of one member to one team; derived from the e-mail, unique per org."""
    return f"orgkeeper-{email_hash(email)}-{team}"


def owner_role(organization: str) -> str:
    """ClusterRole (and ClusterRoleBinding) that lets the Owner manage and delete the org."""
    return f"orgkeeper:owner:{organization}"


def owner_membership(email: str) -> str:
    """Name of the Membership orgkeeper creates for an Owner who has none."""
    return f"owner-{email_hash(email)}"


# The key of a license Secret's data: a copy's, and spec.secretRef's default.
LICENSE_DATA_KEY = "license"


def propagated_license_secret(product: str) -> str:
    """The Secret that carries a product's license into a data plane's namespace."""
    return f"orgkeeper-license-{product}"


def provisioned_license_secret(product: str) -> str:
    """The Secret in the org namespace that holds a Provisioned license's signed payload."""
    return f"license-{product}"


# The reportingController (and source.component) of every Event the operator posts.
EVENT_CONTROLLER = "orgkeeper.dev/operator"


def once_event_name(object_name: str, uid: str, reason: str) -> str:
    """The name of an Event told once about one object (NamespaceNotOwned): every replica and
    every regional operator that posts it again gets 409, so there is one whoever posts it."""
    digest = hashlib.sha256(f"{uid}/{reason}".encode()).hexdigest()[:16]
    return f"{object_name[:200]}.{digest}"


SIGNING_KEY_SECRET = "orgkeeper-signing-key"
# With --leader-elect in `serve` mode: the CA every replica's webhook certificate comes from.
WEBHOOK_CA_SECRET = "orgkeeper-webhook-ca"
VERIFICATION_KEY_CONFIG_MAP = "orgkeeper-license-verification"

# The people API (README "The org switcher"): an aggregated API every replica serves, answering
# each person about themself (the user the API server's front proxy vouches for).
PEOPLE_GROUP = "people.orgkeeper.dev"
PEOPLE_VERSION = "v1alpha1"
MY_ORGANIZATIONS = "myorganizations"
MY_ORGANIZATION_KIND = "MyOrganization"
PEOPLE_API_SERVICE = f"{PEOPLE_VERSION}.{PEOPLE_GROUP}"  # the APIService's name
PEOPLE_API_PATH = f"/apis/{PEOPLE_GROUP}/{PEOPLE_VERSION}"
# Where kube-apiserver publishes its front proxy's CA and header names (readable with the
# built-in Role extension-apiserver-authentication-reader in kube-system).
FRONT_PROXY_CONFIG_MAP = ("kube-system", "extension-apiserver-authentication")
