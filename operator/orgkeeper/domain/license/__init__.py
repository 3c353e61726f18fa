"""Licenses: validity, which one issues into a Secret and which one is active per product,
rotation, and where copies go; a chapter per module.

A reconcile asks three questions in turn, each answered from data alone: which Licenses get a
fresh document (`issuing.plan_issuing`); once those are written, which License is active per
product and what its copies need (`copies.plan_licenses`); once that is applied, each License's
status (`status.license_status`, with the `Delivery` its `CopyPlan` says was made). What a
reconcile looked at is `observation.LicenseObservation`; a document's validity is `evaluation`.
"""
