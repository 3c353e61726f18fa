"""Bad input, generated: Organization, Membership and License bodies (valid and invalid
strings, enums, e-mails, team lists, secret references, unknown fields, long strings) sent
through the real API server.

Each body is either refused with a 4xx whose message names a field, or admitted; every
admitted object is then reconciled: a Ready condition for its generation, True or False with a
reason (a bad-but-admitted spec is reported, not thrown). The operator stays up with no
Traceback in its log, stops writing once converged (resourceVersions settle), and the org the
generated Memberships and Licenses land in keeps working for everyone else.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from orgkeeper import names
from orgkeeper.api.v1alpha1 import API_VERSION, PLANS, PRODUCTS, REGIONS, TEAMS
from support.kube import Kube, wait_for
from support.orgs import membership, organization, wait_members_bound, wait_org

from .operators import Operators
from .report import EXAMPLES, SEED, TALLY
from .state import wait_gone

FIELD = re.compile(r"\b(spec|metadata)(\.[A-Za-z0-9_\[\]]+)*")
QUIET_SECONDS = 6.0  # three check intervals without a write


# --- strategies -----------------------------------------------------------------------------
#
# Each body starts from valid fields (unicode, long and odd-but-valid values included), then up
# to two fields get an invalid value, one required field may go, and unknown fields may come
# along: about a third of the bodies are valid as they stand.

# Any text JSON can carry (no lone surrogates), the control characters included.
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
LONG = st.text(st.characters(codec="utf-8"), min_size=101, max_size=400)
LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
LOCAL = st.from_regex(r"[A-Za-z0-9._%+-]{1,24}", fullmatch=True)
VALID_EMAIL = st.one_of(
    st.builds(
        lambda local, labels: f"{local}@{'.'.join(labels)}",
        LOCAL,
        st.lists(LABEL, min_size=2, max_size=3),
    ),
    st.builds(lambda local: f"{local}@{'a' * 60}.{'b' * 60}.{'c' * 60}.test", LOCAL),  # long
)
BAD_EMAIL = st.one_of(
    VALID_EMAIL.map(lambda e: f" {e} "),
    st.builds(lambda local: f"{local}@{'a' * 250}.test", LOCAL),  # too long
    st.sampled_from(["", "@", "alice@", "@example.com", "alice@localhost", "a@b.c-", "ä@ö.test"]),
    TEXT,
    st.integers(),
)
TIMES = st.one_of(
    st.datetimes().map(lambda t: t.isoformat() + "Z"),
    st.datetimes().map(lambda t: t.isoformat()),  # without an offset
    st.sampled_from(
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00",
            "2026-01-01",
            "2026-01-01T00:00:00+05:30",
            "2026-01-01t00:00:00z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-01-01T00:00:00.123456789Z",
        ]
    ),
)
BAD_TIMES = st.one_of(st.sampled_from(["2026-02-30T00:00:00Z", "yesterday", ""]), TEXT)
UNKNOWN = st.dictionaries(
    st.from_regex(r"[a-z][A-Za-z]{0,12}", fullmatch=True),
    st.one_of(TEXT, st.integers(), st.booleans(), st.none()),
    max_size=2,
)


def junk(values: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Not one of `values`: another case, other text, another type, null."""
    return st.one_of(
        st.sampled_from(values).map(str.lower).filter(lambda v: v not in values),
        st.sampled_from(values).map(str.upper),
        TEXT.filter(lambda v: v not in values),
        st.integers(),
        st.none(),
    )


@st.composite
def specs(
    draw: st.DrawFn,
    valid: dict[str, st.SearchStrategy[Any]],
    optional: frozenset[str],
    invalid: dict[str, st.SearchStrategy[Any]],
) -> dict[str, Any]:
    spec = {
        key: draw(strategy)
        for key, strategy in valid.items()
        if key not in optional or draw(st.booleans())
    }
    for key in draw(st.lists(st.sampled_from(sorted(invalid)), max_size=2, unique=True)):
        spec[key] = draw(invalid[key])
    required = sorted(set(valid) - optional)
    if required and draw(st.integers(0, 9)) == 9:
        spec.pop(draw(st.sampled_from(required)), None)
    spec.update({k: v for k, v in draw(UNKNOWN).items() if k not in valid})
    return spec


ORG_SPEC = specs(
    {
        "displayName": st.text(st.characters(codec="utf-8"), min_size=1, max_size=100),
        "plan": st.sampled_from(PLANS),
        "region": st.sampled_from(REGIONS),
        "owner": VALID_EMAIL,
        "ssoOnly": st.booleans(),
        "state": st.sampled_from(("Active", "Deactivated")),
        "reactivationRequestedAt": TIMES,
        "unlockOwnerEmail": st.booleans(),
    },
    frozenset({"ssoOnly", "state", "reactivationRequestedAt", "unlockOwnerEmail"}),
    {
        "displayName": st.one_of(st.just(""), LONG, st.integers()),
        "plan": junk(PLANS),
        "region": junk(REGIONS),
        "owner": BAD_EMAIL,
        "ssoOnly": TEXT,
        "state": junk(("Active", "Deactivated")),
        "reactivationRequestedAt": BAD_TIMES,
        "unlockOwnerEmail": st.integers(),
    },
)
MEMBERSHIP_SPEC = specs(
    {"email": VALID_EMAIL, "teams": st.lists(st.sampled_from(TEAMS), max_size=5, unique=True)},
    frozenset({"teams"}),
    {
        "email": BAD_EMAIL,
        "teams": st.one_of(
            st.lists(st.sampled_from(TEAMS), min_size=2, max_size=6).filter(
                lambda teams: len(set(teams)) < len(teams)  # a team twice
            ),
            st.lists(st.one_of(st.sampled_from(TEAMS), TEXT), min_size=1, max_size=7),
            TEXT,
            st.none(),
        ),
    },
)
SECRET_NAME = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    # Names the operator itself uses: a License pointing at another one's Secret.
    st.sampled_from([names.provisioned_license_secret(p) for p in PRODUCTS]),
    # Admitted by the schema (any 1..253 characters), yet no Secret can have them.
    st.sampled_from(["Not A Name", "a/b", "..", "UPPER", "x" * 253]),
)
SECRET_KEY = st.one_of(
    st.just("license"),
    st.from_regex(r"[a-z.]{1,12}", fullmatch=True),
    st.sampled_from([".", "..", "..x", ".x", "a b", "tls.crt"]),
)
LICENSE_SPEC = specs(
    {
        "product": st.sampled_from(PRODUCTS),
        "source": st.sampled_from(("Provisioned", "SecretRef")),
        "secretRef": st.fixed_dictionaries({"name": SECRET_NAME}, optional={"key": SECRET_KEY}),
    },
    frozenset({"secretRef"}),
    {
        "product": junk(PRODUCTS),
        "source": junk(("Provisioned", "SecretRef")),
        "secretRef": st.one_of(
            st.fixed_dictionaries({"name": st.one_of(st.just(""), TEXT)}, optional={"key": TEXT}),
            TEXT,
            st.none(),
        ),
    },
)
# Sometimes the Secret a License names exists, with bytes that are no signed license.
SECRET_CONTENT = st.one_of(st.none(), st.binary(max_size=64), st.just(b'{"payload": "e30="}'))
# Mostly a fresh valid name (""); one time in ten a name no object can have.
NAME = st.integers(0, 9).flatmap(
    lambda n: (
        st.sampled_from(["UPPER", "under_score", "a" * 300, "-dash"]) if n == 9 else st.just("")
    )
)


# --- the checks -----------------------------------------------------------------------------


@dataclass
class Outcomes:
    kind: str
    rejected: int = 0
    admitted: list[tuple[str | None, str]] = field(default_factory=list)  # (namespace, name)
    bad_refusals: list[str] = field(default_factory=list)


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message", error.body))
    except (TypeError, ValueError):
        return str(error.body)


def send(outcomes: Outcomes, create: Callable[[], Any], body: dict[str, Any]) -> bool:
    """Creates the object; a refusal must be a 4xx that names a field. True if admitted."""
    try:
        create()
    except ApiException as error:
        message = _message(error)
        if not (400 <= error.status < 500 and FIELD.search(message)):
            outcomes.bad_refusals.append(f"HTTP {error.status} {message!r} for {body}")
        outcomes.rejected += 1
        return False
    outcomes.admitted.append((body["metadata"].get("namespace"), body["metadata"]["name"]))
    return True


def ready_problems(obj: dict[str, Any]) -> str | None:
    """None if the object carries a Ready condition for its generation, True or with a reason."""
    generation = obj["metadata"].get("generation")
    ready = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
        None,
    )
    if ready is None:
        return "no Ready condition"
    if ready.get("observedGeneration") != generation:
        return f"Ready is for generation {ready.get('observedGeneration')}, not {generation}"
    if ready["status"] != "True" and not ready.get("reason"):
        return "Ready is not True and gives no reason"
    return None


def wait_quiet(
    what: str, versions: Callable[[], dict[str, str]], quiet: float, timeout: float
) -> None:
    """Until the resourceVersions read stay the same for `quiet` seconds: no write loop."""
    deadline = time.monotonic() + timeout
    last, since = versions(), time.monotonic()
    changed: list[str] = []
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} kept changing for {timeout:.0f}s (the operator loops writing): "
                f"last changed {changed[:10]}"
            )
        time.sleep(0.5)
        now = versions()
        if now != last:
            changed = sorted(k for k in now.keys() | last.keys() if now.get(k) != last.get(k))
            last, since = now, time.monotonic()


def settle(
    admin: Kube,
    operators: Operators,
    outcomes: Outcomes,
    plural: str,
    log_offset: int,
    pid: int,
    extra_versions: Callable[[], dict[str, str]] = dict,
) -> None:
    """Every admitted object reconciled, then no more writes; the operator up, no Traceback."""

    def unreconciled() -> list[str]:
        found = []
        for namespace, name in outcomes.admitted:
            problem = ready_problems(admin.get(plural, name, namespace))
            if problem:
                found.append(f"{namespace or ''}/{name}: {problem}")
        return found

    last: list[str] = []

    def reconciled() -> bool:
        last[:] = unreconciled()
        return not last

    try:
        wait_for(f"every admitted {outcomes.kind} reconciled", reconciled, timeout=60)
    except AssertionError as error:
        raise AssertionError(f"{error}: {last[:5]}") from None

    def versions() -> dict[str, str]:
        found = {
            f"{namespace}/{name}": admin.get(plural, name, namespace)["metadata"]["resourceVersion"]
            for namespace, name in outcomes.admitted
        }
        return found | extra_versions()

    wait_quiet(f"the admitted {outcomes.kind}s", versions, QUIET_SECONDS, timeout=60)
    assert operators.alive() and operators.pid == pid, "the operator crashed or restarted"
    log = operators.log_since(log_offset)
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000) :][:6000]


def check_and_record(
    admin: Kube,
    operators: Operators,
    outcomes: Outcomes,
    plural: str,
    before: tuple[int, int, float],
    org: str | None = None,
) -> None:
    """The checks after generation, each body one trial in the table (failures included)."""
    offset, pid, started = before
    problem: str | None = None
    try:
        extra = org_versions(admin, org) if org else dict
        settle(admin, operators, outcomes, plural, offset, pid, extra)
        if org:
            still_works(admin, org)
    except AssertionError as error:
        problem = str(error).splitlines()[0][:300]
        raise
    finally:
        fault = f"bad input: generated {outcomes.kind} bodies"
        total = outcomes.rejected + len(outcomes.admitted)
        each = (time.monotonic() - started) / max(total, 1)
        for _ in range(outcomes.rejected - len(outcomes.bad_refusals)):
            TALLY.record(fault, True, each)
        for refusal in outcomes.bad_refusals:
            TALLY.record(fault, False, each, refusal[:300])
        for index, _ in enumerate(outcomes.admitted):
            TALLY.record(fault, problem is None, each, (problem or "") if index == 0 else "")
        reasons = (
            ", ".join(f"{n} {r}" for r, n in sorted(ready_reasons(admin, plural, outcomes).items()))
            if problem is None
            else "not all reconciled"
        )
        TALLY.note(
            fault,
            f"{outcomes.rejected} refused naming a field; {len(outcomes.admitted)} admitted and "
            f"reconciled (Ready: {reasons or 'none'})",
        )
    assert not outcomes.bad_refusals, "\n".join(outcomes.bad_refusals)


def ready_reasons(admin: Kube, plural: str, outcomes: Outcomes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for namespace, name in outcomes.admitted:
        obj = admin.get(plural, name, namespace)
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        key = f"{ready['status']}/{ready['reason']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def target_org(fault_admin: Kube) -> Any:
    """The org the generated Memberships and Licenses are sent into."""
    org = f"hyp-{uuid.uuid4().hex[:5]}"
    fault_admin.create("organizations", organization(org, f"owner@{org}.test"))
    wait_org(fault_admin, org)
    yield org
    fault_admin.delete("organizations", org)
    wait_gone(fault_admin, org)


def generated_body(
    kind: str, name: str, spec: dict[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def test_generated_organizations(fault_admin: Kube, operators: Operators) -> None:
    admin, outcomes = fault_admin, Outcomes("Organization")
    before = operators.log_size(), operators.pid, time.monotonic()
    run = uuid.uuid4().hex[:4]
    counter = itertools.count(1)

    @seed(SEED)
    @HYPOTHESIS
    @given(spec=ORG_SPEC, name=NAME)
    def one(spec: dict[str, Any], name: str) -> None:
        n = next(counter)
        body = generated_body("Organization", name or f"hx-{run}-{n}", spec)
        send(outcomes, lambda: admin.create("organizations", body), body)

    try:
        one()
        check_and_record(admin, operators, outcomes, "organizations", before)
    finally:
        for _, name in outcomes.admitted:
            admin.delete("organizations", name)
        for _, name in outcomes.admitted:
            wait_gone(admin, name)


def test_generated_memberships(fault_admin: Kube, operators: Operators, target_org: str) -> None:
    admin, outcomes = fault_admin, Outcomes("Membership")
    namespace = names.org_namespace(target_org)
    before = operators.log_size(), operators.pid, time.monotonic()
    counter = itertools.count(1)

    @seed(SEED)
    @HYPOTHESIS
    @given(spec=MEMBERSHIP_SPEC, name=NAME)
    def one(spec: dict[str, Any], name: str) -> None:
        n = next(counter)
        if isinstance(spec.get("email"), str) and "@" in spec["email"]:
            # One Membership per e-mail in an org (admission): keep generated ones apart.
            local, _, domain = spec["email"].partition("@")
            spec = {**spec, "email": f"{local}{n}@{domain}"}
        body = generated_body("Membership", name or f"hm-{n}", spec, namespace)
        send(outcomes, lambda: admin.create("memberships", body, namespace), body)

    one()
    check_and_record(admin, operators, outcomes, "memberships", before, target_org)


def test_generated_licenses(fault_admin: Kube, operators: Operators, target_org: str) -> None:
    admin, outcomes = fault_admin, Outcomes("License")
    namespace = names.org_namespace(target_org)
    before = operators.log_size(), operators.pid, time.monotonic()
    counter = itertools.count(1)

    @seed(SEED)
    @HYPOTHESIS
    @given(spec=LICENSE_SPEC, name=NAME, content=SECRET_CONTENT)
    def one(spec: dict[str, Any], name: str, content: bytes | None) -> None:
        n = next(counter)
        ref = spec.get("secretRef")
        if content is not None and isinstance(ref, dict) and _secret_name(ref.get("name")):
            key = ref.get("key")
            _put_secret(
                admin, namespace, ref["name"], key if isinstance(key, str) else "license", content
            )
        body = generated_body("License", name or f"hl-{n}", spec, namespace)
        send(outcomes, lambda: admin.create("licenses", body, namespace), body)

    one()
    check_and_record(admin, operators, outcomes, "licenses", before, target_org)


def org_versions(admin: Kube, org: str) -> Callable[[], dict[str, str]]:
    """The org's own objects: they must settle too (no write loop set off by a bad one)."""
    namespace = names.org_namespace(org)

    def read() -> dict[str, str]:
        found = {"org": admin.get("organizations", org)["metadata"]["resourceVersion"]}
        for plural in ("licenses", "memberships"):
            for obj in admin.list(plural, namespace):
                found[f"{plural}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        for secret in admin.core.list_namespaced_secret(namespace).items:
            found[f"secrets/{secret.metadata.name}"] = secret.metadata.resource_version
        return found

    return read


def still_works(admin: Kube, org: str) -> None:
    """Whatever got in, the org still reconciles: a new member is bound, the org Ready."""
    email = f"late-{uuid.uuid4().hex[:4]}@{org}.test"
    admin.create(
        "memberships", membership("late-member", email, "portal-admin"), names.org_namespace(org)
    )
    wait_members_bound(admin, org, {email: ["portal-admin"]})
    wait_org(admin, org)


def _secret_name(name: Any) -> bool:
    allowed = set(string.ascii_lowercase + string.digits + "-.")
    return (
        isinstance(name, str)
        and 0 < len(name) <= 253
        and set(name) <= allowed
        and (name[0].isalnum() and name[-1].isalnum())
    )


def _put_secret(admin: Kube, namespace: str, name: str, key: str, content: bytes) -> None:
    body = {"metadata": {"name": name}, "data": {key: base64.b64encode(content).decode()}}
    try:
        admin.core.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status not in (409, 422):  # exists already, or a key no Secret takes
            raise
