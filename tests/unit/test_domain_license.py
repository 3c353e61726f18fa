"""The license policy, from data alone: who issues into a Secret, what is due, which License is
active, where copies go, and what each License says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orgkeeper import licensing, names
from orgkeeper.api.v1alpha1.license import LicenseStatus
from orgkeeper.api.v1alpha1.organization import OrganizationSpec
from orgkeeper.controllers.records import WorkloadRecord
from orgkeeper.domain.license.copies import (
    CopyPlan,
    Delivery,
    LicensePlan,
    copies_to_read,
    plan_licenses,
)
from orgkeeper.domain.license.evaluation import next_due
from orgkeeper.domain.license.issuing import Refused, plan_issuing
from orgkeeper.domain.license.observation import Copy, LicenseObservation, LicenseSeen, Owner
from orgkeeper.domain.license.status import license_status

KEY = licensing.new_signing_key()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ORG, UID = "acme", "uid-acme"
MESH, GATEWAY = "mesh", "gateway-enterprise"
LABELS = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_ORGANIZATION: ORG}
COPY = names.propagated_license_secret(MESH)


def document(
    product: str = MESH,
    *,
    age: timedelta = timedelta(days=10),
    organization: str = ORG,
    plan: str = "Plus",
    validity: timedelta = timedelta(days=365),
    key: Ed25519PrivateKey = KEY,
    uid: str = UID,
) -> bytes:
    payload = licensing.LicensePayload(
        organization=organization,
        product=product,
        plan=plan,
        region="eu",
        issued_at=NOW - age,
        expires_at=NOW - age + validity,
        organization_uid=uid,
    )
    return licensing.sign(payload, key)


def lic(
    name: str,
    doc: bytes | None = None,
    *,
    product: str = MESH,
    source: str = "Provisioned",
    created: str = "2026-01-01T00:00:00Z",
    secret: str | None = "license-mesh",
    secret_exists: bool | None = None,
) -> LicenseSeen:
    """`secret_exists` defaults to whether there is a document."""
    exists = doc is not None if secret_exists is None else secret_exists
    missing = "" if doc is not None else f"Secret {secret} not found in org-{ORG}"
    return LicenseSeen(name, product, source, created, secret, "license", doc, missing, exists)


def plane(namespace: str, name: str = "dp", *, fingerprint: str | None = None) -> WorkloadRecord:
    annotations = {names.ANNOTATION_LICENSE_FINGERPRINT: fingerprint} if fingerprint else {}
    return WorkloadRecord(
        "Deployment", namespace, name, f"uid-{name}", ORG, "data-plane", MESH, annotations
    )


def copy(doc: bytes, *, owner_uid: str = UID) -> Copy:
    return Copy(
        uid=f"copy-of-{owner_uid}",
        resource_version="7",
        document=doc,
        labels={**LABELS, names.LABEL_PRODUCT: MESH},
        owners=[Owner("Organization", ORG, owner_uid, True)],
    )


def observe(
    licenses: Sequence[LicenseSeen],
    *,
    workloads: Sequence[WorkloadRecord] = (),
    recorded: Sequence[str] = (),
    copies: Mapping[str, Copy | None] | None = None,
    deactivated: bool = False,
) -> LicenseObservation[WorkloadRecord]:
    """`copies` by namespace, of mesh; by default none found where data planes are."""
    if copies is None:
        copies = dict.fromkeys({w.namespace for w in workloads})
    return LicenseObservation(
        organization=ORG,
        organization_uid=UID,
        spec=OrganizationSpec(display_name="Acme", plan="Plus", region="eu", owner="o@x.io"),
        deactivated=deactivated,
        now=NOW,
        rotate_after=timedelta(days=182),
        validity=timedelta(days=365),
        public_key=KEY.public_key(),
        licenses=licenses,
        workloads=workloads,
        recorded={MESH: set(recorded)},
        copies={(MESH, ns): found for ns, found in copies.items()},
        labels={p: {**LABELS, names.LABEL_PRODUCT: p} for p in (MESH, GATEWAY)},
    )


def plan(observation: LicenseObservation[WorkloadRecord]) -> LicensePlan[WorkloadRecord]:
    """Planned as the reconcile does, every document issued being written."""
    issuing = plan_issuing(observation)
    issued = {i.license: licensing.sign(i.payload, KEY) for i in issuing.issues}
    return plan_licenses(observation, issuing, issued)


def mesh_copies(planned: LicensePlan[WorkloadRecord]) -> CopyPlan[WorkloadRecord]:
    return next(c for c in planned.copies if c.product == MESH)


# -- validity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (document(), "Verified"),
        (document(key=licensing.new_signing_key()), "BadSignature"),
        (document(organization="globex"), "WrongOrganization"),
        (document(uid="uid-of-an-earlier-org-of-that-name"), "WrongOrganization"),
        (document(uid=""), "WrongOrganization"),
        (document(GATEWAY), "WrongProduct"),
        (document(age=timedelta(days=400)), "Expired"),
        (None, "SecretMissing"),
    ],
)
def test_a_license_is_valid_only_signed_for_its_org_and_product_and_unexpired(
    doc: bytes | None, reason: str
) -> None:
    issuing = plan_issuing(observe([lic("mesh", doc, source="SecretRef")]))
    assert issuing.evaluated["mesh"].reason == reason
    assert issuing.issues == []  # a SecretRef license is never issued by orgkeeper


def test_the_newest_valid_license_of_a_product_is_the_active_one() -> None:
    older, newer = document(age=timedelta(days=20)), document(age=timedelta(days=5))
    planned = plan(
        observe(
            [
                lic("contract", newer, source="SecretRef", secret="contract"),
                lic("mesh", older),
            ]
        )
    )
    assert planned.active[MESH].name == "contract"
    status = license_status(
        planned.evaluated["mesh"],
        planned.active[MESH],
        Delivery(namespaces=["edge"]),
        LicenseStatus(),
        generation=1,
        now=NOW,
    )
    assert (status.active, status.propagated_to and status.propagated_to.namespaces) == (
        False,
        [],
    )
    assert [(c.type, c.reason) for c in status.conditions] == [
        ("Valid", "Verified"),
        ("Propagated", "Superseded"),
        ("Ready", "Superseded"),
    ]


# -- issuing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "why", "exists"),
    [
        (None, "issued", False),
        (document(age=timedelta(days=10)), None, True),
        (document(age=timedelta(days=182)), "rotated", True),
        (document(plan="Free"), "reissued", True),
        (document(age=timedelta(days=400)), "reissued", True),
        (document(uid="uid-of-an-earlier-org-of-that-name"), "reissued", True),
    ],
)
def test_a_provisioned_license_is_issued_rotated_or_reissued_when_due(
    doc: bytes | None, why: str | None, exists: bool
) -> None:
    issuing = plan_issuing(observe([lic("mesh", doc)]))
    assert [(i.license, i.why, i.exists) for i in issuing.issues] == (
        [("mesh", why, exists)] if why else []
    )
    for issue in issuing.issues:
        assert (issue.secret_name, issue.secret_key) == ("license-mesh", "license")
        assert (issue.payload.plan, issue.payload.issued_at) == ("Plus", NOW)
        assert issue.payload.expires_at == NOW + timedelta(days=365)
        assert issue.payload.organization_uid == UID


def test_a_license_of_an_earlier_org_of_the_same_name_says_whose_it_is() -> None:
    earlier = document(uid="uid-earlier", plan="Enterprise")
    issuing = plan_issuing(observe([lic("contract", earlier, source="SecretRef")]))
    found = issuing.evaluated["contract"]
    assert (found.valid, found.reason) == (False, "WrongOrganization")
    assert "issued to organization acme with UID uid-earlier" in found.message
    assert f"not to this Organization (UID {UID})" in found.message
    assert issuing.issues == []


def test_a_secret_without_the_document_is_patched_not_created() -> None:
    # Creating it would answer 409 on every check and the License would never be issued.
    issuing = plan_issuing(observe([lic("mesh", None, secret_exists=True)]))
    assert [(i.license, i.why, i.exists) for i in issuing.issues] == [("mesh", "issued", True)]


@pytest.mark.parametrize(
    ("doc", "notice"),
    [
        (None, None),
        (document(age=timedelta(days=200)), ("LicenseRotated", "rotated the mesh license: ")),
        (document(plan="Free"), ("LicenseReissued", "reissued the mesh license: ")),
    ],
)
def test_a_rotation_or_reissue_is_told_on_the_license(
    doc: bytes | None, notice: tuple[str, str] | None
) -> None:
    planned = plan(observe([lic("mesh", doc)]))
    told = [(n.license, n.reason, n.message) for n in planned.notices]
    fingerprint = planned.evaluated["mesh"].verified
    assert fingerprint is not None
    assert told == ([("mesh", notice[0], notice[1] + fingerprint.fingerprint)] if notice else [])


@pytest.mark.parametrize(
    ("licenses", "issuer", "in_use"),
    [
        # Neither has a payload: the older issues.
        (
            [lic("b", created="2026-01-02T00:00:00Z"), lic("a", created="2026-01-03T00:00:00Z")],
            "b",
            "a",
        ),
        # Created at once: by name.
        ([lic("b"), lic("a")], "a", "b"),
        # The Secret holds the newer one's payload: it keeps issuing into it.
        (
            [
                lic("gw", product=GATEWAY, created="2026-01-01T00:00:00Z", doc=document()),
                lic("mesh", created="2026-01-02T00:00:00Z", doc=document()),
            ],
            "mesh",
            "gw",
        ),
    ],
)
def test_of_two_provisioned_licenses_naming_one_secret_one_issues_the_other_is_in_use(
    licenses: list[LicenseSeen], issuer: str, in_use: str
) -> None:
    issuing = plan_issuing(observe(licenses))
    assert [i.license for i in issuing.issues] in ([issuer], [])
    assert issuing.evaluated[in_use].reason == "SecretInUse"
    assert issuing.evaluated[in_use].message == (
        f"Secret license-mesh holds the provisioned license of License {issuer}; "
        "name a Secret of its own in spec.secretRef"
    )
    assert issuing.evaluated[issuer].reason != "SecretInUse"


def test_a_secret_orgkeeper_may_not_write_is_said_on_the_license() -> None:
    observation = observe([lic("mesh", secret="theirs")])
    issuing = plan_issuing(observation)
    planned = plan_licenses(observation, issuing, {"mesh": Refused(403)})
    item = planned.evaluated["mesh"]
    assert (item.valid, item.reason) == (False, "SecretNotWritable")
    assert item.message == (
        "orgkeeper may not write Secret theirs (HTTP 403); name the Secret license-mesh in "
        "spec.secretRef for a Provisioned license"
    )
    assert planned.active == {}
    assert planned.notices == []


# -- copies -----------------------------------------------------------------------------------


def test_a_copy_is_written_where_a_data_plane_has_none_or_an_outdated_one() -> None:
    doc = document()
    observation = observe(
        [lic("mesh", doc)],
        workloads=[plane("new"), plane("old"), plane("same"), plane("same", "dp2")],
        copies={"new": None, "old": copy(document(age=timedelta(days=20))), "same": copy(doc)},
    )
    copies = mesh_copies(plan(observation))
    assert copies.secret == COPY
    assert copies.data == {"license": doc}
    assert [(w.namespace, w.exists, w.resource_version) for w in copies.writes] == [
        ("new", False, None),
        ("old", True, "7"),
    ]
    assert copies.current == {"same"}
    assert [w.ref for w in copies.annotations(written=["new"])] == [
        "new/dp",
        "same/dp",
        "same/dp2",
    ]
    delivery = copies.delivery(written=["new"], undeleted=[], failed=())
    assert (delivery.namespaces, delivery.refs) == (
        ["new", "old", "same"],
        ["new/dp", "same/dp", "same/dp2"],
    )
    notice = copies.notice(written=["new"])
    assert notice is not None
    assert (notice.license, notice.reason) == ("mesh", "LicensePropagated")
    assert notice.message.startswith("mesh license sha256:") and notice.message.endswith(
        " delivered to new"
    )


def test_an_annotated_data_plane_with_a_current_copy_needs_nothing() -> None:
    doc = document()
    fingerprint = licensing.verify(doc, KEY.public_key()).fingerprint
    copies = mesh_copies(
        plan(
            observe(
                [lic("mesh", doc)],
                workloads=[plane("edge", fingerprint=fingerprint)],
                copies={"edge": copy(doc)},
            )
        )
    )
    assert (copies.writes, copies.annotations(written=[]), copies.notice(written=[])) == (
        (),
        [],
        None,
    )


def test_a_secret_of_the_copys_name_that_the_org_does_not_own_is_a_conflict() -> None:
    doc = document()
    planned = plan(
        observe(
            [lic("mesh", doc)],
            workloads=[plane("edge")],
            copies={"edge": copy(doc, owner_uid="someone-else")},
        )
    )
    copies = mesh_copies(planned)
    assert (copies.writes, copies.conflicts) == ((), ("edge",))
    delivery = copies.delivery(written=[], undeleted=[], failed=())
    status = license_status(
        planned.evaluated["mesh"],
        planned.active[MESH],
        delivery,
        LicenseStatus(),
        generation=1,
        now=NOW,
    )
    assert [(c.type, c.status, c.reason) for c in status.conditions][1:] == [
        ("Propagated", "False", "SecretConflict"),
        ("Ready", "False", "SecretConflict"),
    ]
    assert delivery.namespaces == []


@pytest.mark.parametrize(
    ("found", "withdraw", "held"),
    [
        (copy(b"x"), [("gone", f"copy-of-{UID}")], []),  # the org's: deleted
        (copy(b"x", owner_uid="someone-else"), [], []),  # not the org's: left alone
        (None, [], []),  # already gone
    ],
)
def test_a_copy_no_data_plane_needs_any_more_is_withdrawn(
    found: Copy | None, withdraw: list[tuple[str, str]], held: list[str]
) -> None:
    copies = mesh_copies(
        plan(observe([lic("mesh", document())], recorded=["gone"], copies={"gone": found}))
    )
    assert (list(copies.withdraw), copies.writes) == (withdraw, ())
    assert copies.delivery(written=[], undeleted=[], failed=()).namespaces == held
    assert copies.delivery(written=[], undeleted=["gone"], failed=()).namespaces == ["gone"]


def test_a_copy_not_read_stays_on_the_record_and_is_not_written() -> None:
    copies = mesh_copies(
        plan(
            observe(
                [lic("mesh", document())],
                workloads=[plane("edge")],
                recorded=["gone", "edge"],
                copies={},
            )
        )
    )
    assert (copies.withdraw, copies.writes, copies.conflicts) == ((), (), ())
    assert copies.delivery(written=[], undeleted=[], failed=()).namespaces == ["edge", "gone"]


def test_a_deactivated_org_delivers_nothing_new_and_withdraws_unneeded_copies() -> None:
    observation = observe(
        [lic("mesh", document())],
        workloads=[plane("edge")],
        recorded=["edge", "gone"],
        copies={"gone": copy(b"x")},
        deactivated=True,
    )
    assert copies_to_read(observation.workloads, observation.recorded, [MESH], deactivated=True)[
        MESH
    ] == ["edge", "gone"]
    copies = mesh_copies(plan(observation))
    assert (copies.writes, list(copies.withdraw)) == ((), [("gone", f"copy-of-{UID}")])
    assert copies.annotations(written=[]) == []
    delivery = copies.delivery(written=[], undeleted=[], failed=())
    assert (delivery.frozen, delivery.refs, delivery.namespaces) == (True, ["edge/dp"], ["edge"])


def test_without_a_valid_license_the_copies_stay_as_they_are() -> None:
    copies = mesh_copies(
        plan(
            observe(
                [lic("mesh", document(age=timedelta(days=400)), source="SecretRef")],
                workloads=[plane("edge")],
                recorded=["edge"],
            )
        )
    )
    assert (copies.license, copies.writes, copies.withdraw) == (None, (), ())
    delivery = copies.delivery(written=[], undeleted=[], failed=())
    assert (delivery.refs, delivery.namespaces) == ((), ["edge"])


def test_only_namespaces_with_a_data_plane_of_a_licensed_product_are_read() -> None:
    workloads = [plane("edge")]
    wanted = copies_to_read(workloads, {MESH: {"gone"}}, [MESH], deactivated=False)
    assert wanted == {GATEWAY: [], "ingress-controller": [], MESH: ["edge", "gone"]}
    assert copies_to_read(workloads, {}, [GATEWAY], deactivated=False)[MESH] == []


def test_the_next_due_moment_is_the_first_rotation_or_expiry_still_ahead() -> None:
    rotate_after = timedelta(days=182)

    def due(*licenses: LicenseSeen) -> datetime | None:
        evaluated = plan_issuing(observe(licenses)).evaluated.values()
        return next_due(evaluated, now=NOW, rotate_after=rotate_after)

    young = document(age=timedelta(days=10))
    assert due(lic("mesh", young)) == NOW - timedelta(days=10) + rotate_after
    # A contract license is never rotated: it is due when it expires.
    assert due(lic("contract", young, source="SecretRef")) == NOW + timedelta(days=355)
    # Past its rotation (not rotated yet, or refused): its expiry, never a moment gone by.
    old = document(age=timedelta(days=200))
    assert due(lic("mesh", old)) == NOW + timedelta(days=165)
    assert due(lic("mesh", None), lic("bad", document(GATEWAY), source="SecretRef")) is None
    # A contract issued ahead is due when it becomes valid: five minutes before its issue time.
    ahead = document(age=-timedelta(days=30))
    assert due(lic("next", ahead, source="SecretRef")) == NOW + timedelta(days=30, minutes=-5)
