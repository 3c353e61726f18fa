"""Which shard serves which slot (`--shard i/N`), settled once per shard count.

The first shard of N to start plans the map from the orgs there are then (domain/shards.plan:
the busiest shard holds at most 1.05x the mean) and stores it in an immutable ConfigMap
(names.shard_map); every shard of N, now or later, reads that one, so they never disagree,
whatever orgs came since. A new count is a new map (README: Scaling out).
"""

from __future__ import annotations

import dataclasses
import logging

from .. import names
from ..domain.shards import Shard, load_of, map_data, map_of, plan
from ..kube import KubeApi, Outcome
from ..settings import SettingError, Settings
from . import listwatch

logger = logging.getLogger(__name__)


def organization_names(kube: KubeApi, region: str | None) -> list[str]:
    """Every Organization's name (of `region`, if given), listed in pages."""
    found: list[str] = []
    token: str | None = None
    while True:
        page = listwatch.organizations(kube).list_page.blocking(token)
        for body in page["items"]:
            if region is None or (body.get("spec") or {}).get("region") == region:
                found.append(body["metadata"]["name"])
        token = page.get("metadata", {}).get("continue") or None
        if token is None:
            return found


def with_shard_map(kube: KubeApi, settings: Settings) -> Settings:
    """`settings` with its shard's map: the stored one, else planned now and stored (of two
    shards planning at once, the first to store wins and the other reads it). Blocking: call it
    before the operator runs. A stored map that can't be one stops the start (SettingError)."""
    shard = settings.shard
    if not shard.sharded:
        return settings
    name = names.shard_map(settings.region, shard.count)
    stored = kube.read_config_map_data.blocking(settings.namespace, name)
    if stored is None:
        orgs = organization_names(kube, settings.region)
        planned = map_data(shard.count, plan(load_of(orgs), shard.count))
        made = kube.create_immutable_config_map.blocking(settings.namespace, name, planned)
        if made is Outcome.CREATED:
            logger.info(
                "Shard map %s/%s: planned for %d shards from %d orgs.",
                settings.namespace,
                name,
                shard.count,
                len(orgs),
            )
        stored = kube.read_config_map_data.blocking(settings.namespace, name) or planned
    try:
        slot_map = map_of(stored, shard.count)
    except ValueError as error:
        raise SettingError(
            "shard", f"ConfigMap {settings.namespace}/{name} is not a shard map: {error}"
        ) from None
    return dataclasses.replace(settings, shard=Shard(shard.index, shard.count, slot_map))
