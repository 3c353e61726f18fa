"""The account policy as pure functions: observed state in, desired state and actions out.

Nothing here talks to Kubernetes or imports kopf; handlers feed it and adapters apply it.
"""
