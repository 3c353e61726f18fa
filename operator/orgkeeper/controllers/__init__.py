"""Reconcile steps: read what the caches (kopf's indexes, the Runtime's informers) and the API
show, ask the domain, apply through kube.

Each step is idempotent and compares before it writes, so a reconcile that finds everything
in place writes nothing, and one cut short by a crash is simply run again.
"""
