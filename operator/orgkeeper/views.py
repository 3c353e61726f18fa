"""What the `orgkeeper orgs` and `orgkeeper status` commands show, built from API objects."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

# Only names: the `orgkeeper` commands that use this module stay clear of the API models.
from .names import organization_of_namespace, same_email


def _parse(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def org_state(org: Mapping[str, Any]) -> str:
    status = org.get("status") or {}
    return str(status.get("phase") or "Unreconciled")  # no operator has written it yet


def switcher_rows(
    email: str, memberships: Sequence[Mapping[str, Any]], orgs: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every org where the e-mail has a Membership (the org switcher), sorted by name."""
    rows = []
    for membership in memberships:
        if not same_email(membership["spec"].get("email"), email):
            continue
        # The org is the one of the namespace: a label its org-admins can edit proves nothing.
        name = organization_of_namespace(membership["metadata"].get("namespace"))
        org = orgs.get(name or "")
        if org is None:
            continue
        status = membership.get("status") or {}
        state = org_state(org)
        rows.append(
            {
                "organization": name,
                "displayName": org["spec"].get("displayName", ""),
                "region": org["spec"].get("region", ""),
                "state": state,
                "deactivated": state in ("Deactivating", "Deactivated"),
                "owner": same_email((org.get("status") or {}).get("owner"), email),
                # Its roles are held only through the identity provider (an SSO session).
                "ssoOnly": bool(org["spec"].get("ssoOnly")),
                # Once reconciled, the teams actually held (none while the org is deactivated).
                "teams": list(
                    status.get("effectiveTeams", [])
                    if "state" in status
                    else membership["spec"].get("teams") or []
                ),
            }
        )
    return sorted(rows, key=lambda row: str(row["organization"]))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[header for header, _ in columns]] + [
        [_cell(row.get(key)) for _, key in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None or value == "" else str(value)


def status_summary(
    org: Mapping[str, Any],
    licenses: Sequence[Mapping[str, Any]] | None,
    now: datetime,
) -> dict[str, Any]:
    """One org's state as plain data (for --output json|yaml and for the screen); `licenses`
    None: the requester may not list them (null in json and yaml)."""
    spec, status = org["spec"], org.get("status") or {}
    billing = status.get("billing") or {}
    trial = status.get("trial") or {}
    ends = _parse(trial.get("endsAt"))
    deactivation = status.get("deactivation") or {}
    return {
        "name": org["metadata"]["name"],
        "displayName": spec.get("displayName"),
        "phase": org_state(org),
        "owner": status.get("owner") or spec.get("owner"),
        "plan": spec.get("plan"),
        "region": spec.get("region"),
        "billing": billing.get("state"),
        "subscriptions": [s.get("name") for s in billing.get("subscriptions") or []],
        "trialDaysLeft": _days_left(ends, now) if ends else None,
        "members": status.get("members", 0),
        "admins": status.get("admins", 0),
        "controlPlanes": status.get("controlPlanes", 0),
        "dataPlanes": status.get("dataPlanes", 0),
        "deactivation": deactivation or None,
        "ownerEmailLocked": bool(status.get("ownerEmailLocked")),
        "ssoOnly": bool(spec.get("ssoOnly")),
        "licenses": None
        if licenses is None
        else [
            _license_row(lic) for lic in sorted(licenses, key=lambda lic: lic["metadata"]["name"])
        ],
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
    }


def _days_left(ends: datetime, now: datetime) -> int:
    """Whole days of credits left, rounded up: a new 30-day trial shows 30, its last hours 1."""
    return max(0, math.ceil((ends - now) / timedelta(days=1)))


def _license_row(lic: Mapping[str, Any]) -> dict[str, Any]:
    status = lic.get("status") or {}
    found = {c.get("type"): c for c in status.get("conditions") or []}
    valid = found.get("Valid") or {}
    # Why it isn't valid, else why it isn't ready (e.g. superseded, delivery failed).
    problem: Mapping[str, Any] = next(
        (found[t] for t in ("Valid", "Ready") if t in found and found[t].get("status") != "True"),
        {},
    )
    return {
        "name": lic["metadata"]["name"],
        "product": lic["spec"].get("product"),
        "source": lic["spec"].get("source"),
        "valid": valid.get("status") == "True",
        "active": bool(status.get("active")),
        "expiresAt": status.get("expiresAt"),
        "deliveredTo": (status.get("propagatedTo") or {}).get("count", 0),
        "reason": problem.get("reason"),
        "message": problem.get("message"),
    }


RECENT_EVENTS = 10


def event_rows(
    events: Sequence[Mapping[str, Any]], shown: int = RECENT_EVENTS
) -> list[dict[str, Any]]:
    """The last few Events, oldest first: when, type, reason, what about, message."""
    rows = []
    for event in events:
        about = event.get("involvedObject") or {}
        rows.append(
            {
                "time": event.get("lastTimestamp")
                or event.get("eventTime")
                or event["metadata"].get("creationTimestamp"),
                "type": event.get("type"),
                "reason": event.get("reason"),
                "object": f"{str(about.get('kind', '')).lower()}/{about.get('name', '')}",
                "message": event.get("message"),
            }
        )
    return sorted(rows, key=lambda row: str(row["time"] or ""))[-shown:]


def _events_lines(summary: Mapping[str, Any]) -> list[str]:
    namespace = f"org-{summary['name']}"
    rows = summary.get("recentEvents", [])
    if rows is None:
        return [
            f"Recent events: not shown: you may not list Events in {namespace} (its Owner and "
            "the organization-admin team may)"
        ]
    if not rows:
        return [f"Recent events: none in {namespace} (Events are kept for an hour)"]
    columns = [
        ("TIME", "time"),
        ("TYPE", "type"),
        ("REASON", "reason"),
        ("OBJECT", "object"),
        ("MESSAGE", "message"),
    ]
    return [f"Recent events (kubectl get events -n {namespace}):", table(rows, columns)]


def status_screen(summary: Mapping[str, Any]) -> str:
    lines = [
        f"Organization {summary['name']} ({summary['displayName']})",
        f"  Phase:    {summary['phase']}",
        f"  Owner:    {summary['owner']}",
        "  Sign-in:  "
        + (
            "SSO only: members act only through the identity provider (an SSO session)"
            if summary["ssoOnly"]
            else "any login the cluster offers (the e-mail, or through the identity provider)"
        ),
        f"  Plan:     {summary['plan']} in region {summary['region']}",
        f"  Billing:  {summary['billing'] or '-'}"
        + (f" ({', '.join(summary['subscriptions'])})" if summary["subscriptions"] else ""),
    ]
    if summary["trialDaysLeft"] is not None:
        lines.append(f"  Trial:    {summary['trialDaysLeft']} day(s) of credits left")
    if summary["deactivation"]:
        deactivation = summary["deactivation"]
        locked = "locked" if summary["ownerEmailLocked"] else "unlocked"
        reason, at = deactivation.get("reason"), deactivation.get("at")
        lines.append(f"  Deactivated: {reason} at {at}; owner e-mail {locked}")
    lines += [
        f"  Members:  {summary['members']} ({summary['admins']} admin(s))",
        f"  Planes:   {summary['controlPlanes']} control, {summary['dataPlanes']} data",
        "",
    ]
    if summary["licenses"] is None:
        lines += ["Licenses: not readable with your rights", ""]
    else:
        lines += _license_lines(summary["licenses"])
    lines += [
        "Conditions:",
        table(
            summary["conditions"],
            [("TYPE", "type"), ("STATUS", "status"), ("REASON", "reason"), ("MESSAGE", "message")],
        ),
    ]
    if summary.get("you"):
        me = summary["you"]
        role = "Owner" if me["owner"] else "member"
        lines.insert(3, f"  You:      {role}; teams {', '.join(me['teams']) or '-'}")
    if "recentEvents" in summary:
        lines += ["", *_events_lines(summary)]
    return "\n".join(lines + _next_lines(summary))


def _license_lines(licenses: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        "Licenses:",
        table(
            licenses,
            [
                ("NAME", "name"),
                ("PRODUCT", "product"),
                ("SOURCE", "source"),
                ("VALID", "valid"),
                ("ACTIVE", "active"),
                ("EXPIRES", "expiresAt"),
                ("DATA PLANES", "deliveredTo"),
                ("REASON", "reason"),
            ],
        ),
        *(f"  {lic['name']}: {lic['message']}" for lic in licenses if lic["message"]),
        "",
    ]


def my_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The people API's MyOrganizations as the switcher's rows (the same as switcher_rows)."""
    rows = []
    for item in items:
        org, membership = item.get("organization") or {}, item.get("membership") or {}
        rows.append(
            {
                "organization": item["metadata"]["name"],
                "displayName": org.get("displayName", ""),
                "region": org.get("region", ""),
                "state": org.get("state", ""),
                "deactivated": bool(org.get("deactivated")),
                "owner": bool(membership.get("owner")),
                "ssoOnly": bool(org.get("ssoOnly")),
                "teams": list(membership.get("teams") or []),
            }
        )
    return sorted(rows, key=lambda row: str(row["organization"]))


SWITCHER_COLUMNS = [
    ("ORGANIZATION", "organization"),
    ("DISPLAY NAME", "displayName"),
    ("REGION", "region"),
    ("STATE", "state"),
    ("OWNER", "owner"),
    ("TEAMS", "teams"),
    ("SSO ONLY", "ssoOnly"),
]


def you(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the status shows of the requester, from their MyOrganization."""
    membership = item.get("membership") or {}
    return {
        "owner": bool(membership.get("owner")),
        "membership": membership.get("name"),
        "membershipState": membership.get("state"),
        "teams": list(membership.get("teams") or []),
        "requestedTeams": list(membership.get("requestedTeams") or []),
    }


def member_summary(item: Mapping[str, Any]) -> dict[str, Any]:
    """`orgkeeper status` for a member who may not read the Organization itself: what the
    people API tells them about it and about themself."""
    org = item.get("organization") or {}
    return {
        "name": item["metadata"]["name"],
        "displayName": org.get("displayName"),
        "phase": org.get("state"),
        "plan": org.get("plan"),
        "region": org.get("region"),
        "ssoOnly": bool(org.get("ssoOnly")),
        "you": you(item),
    }


def next_steps(summary: Mapping[str, Any]) -> list[str]:
    """What the requester may do next, by their place in the org and its state."""
    me = summary.get("you")
    if not me:
        return []
    name, phase = summary["name"], summary.get("phase")
    namespace = f"org-{name}"
    steps: list[str] = []
    if summary.get("ssoOnly"):
        steps.append("Sign in through the identity provider: only an SSO session holds roles here.")
    if phase in ("Deactivating", "Deactivated"):
        held = ", ".join(me["requestedTeams"]) or "none"
        if me["owner"]:
            steps += [
                "Reactivation is support's to do: ask support (your e-mail stays locked for new "
                "orgs until they unlock it).",
                f"Delete the organization: kubectl delete organization {name}",
            ]
        else:
            steps.append(
                f"Your teams ({held}) hold no roles while it is deactivated; its Owner can ask "
                "support to reactivate it."
            )
        return steps
    if phase in (None, "Unreconciled", "Provisioning"):
        steps.append("It is being provisioned: look again in a moment.")
    if me["owner"]:
        steps += [
            f"Change its display name, plan (Free or Plus) or SSO-only sign-in: kubectl edit "
            f"organization {name}",
            f"Add members: create a Membership in {namespace} (kubectl create -f ... -n "
            f"{namespace})",
            "Transfer ownership to an organization-admin (spec.owner), request deactivation "
            f"(spec.state: Deactivated) or delete it (kubectl delete organization {name}).",
        ]
    elif "organization-admin" in me["teams"]:
        steps.append(f"Manage members and their teams: kubectl get memberships -n {namespace}")
    if me["teams"]:
        steps.append(
            f"See what your teams ({', '.join(me['teams'])}) let you do: kubectl auth can-i "
            f"--list -n {namespace}"
        )
    elif not me["owner"]:
        state = me.get("membershipState") or "not reconciled yet"
        steps.append(
            f"Your Membership is {state} and holds no roles yet; an organization-admin "
            "manages teams."
        )
    return steps


def member_status_screen(summary: Mapping[str, Any]) -> str:
    me = summary["you"]
    role = "Owner" if me["owner"] else "member"
    lines = [
        f"Organization {summary['name']} ({summary['displayName']})",
        f"  Phase:    {summary['phase']}",
        f"  Plan:     {summary['plan']} in region {summary['region']}",
        "  Sign-in:  "
        + (
            "SSO only: members act only through the identity provider (an SSO session)"
            if summary["ssoOnly"]
            else "any login the cluster offers (the e-mail, or through the identity provider)"
        ),
        f"  You:      {role}; teams {', '.join(me['teams']) or '-'}",
    ]
    if "recentEvents" in summary:
        lines += ["", *_events_lines(summary)]
    return "\n".join(lines + _next_lines(summary))


def _next_lines(summary: Mapping[str, Any]) -> list[str]:
    steps = next_steps(summary)
    return ["", "What you may do next:", *(f"  - {step}" for step in steps)] if steps else []
