"""Versioned API types: the single source of truth for the CRDs in crds/."""
