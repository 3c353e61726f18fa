"""Organizations, a chapter per module: ownership (exactly one Owner, transfers, the Owner's
rights), billing (cycles, subscriptions, the Plus trial), the plan of one reconcile decided from
what it observed, and the status and Events it reports once that plan is applied."""
