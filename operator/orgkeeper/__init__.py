"""orgkeeper: an API platform's account policy, run as Kubernetes custom resources."""
