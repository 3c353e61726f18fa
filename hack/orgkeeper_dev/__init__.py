"""Development tooling, never shipped: the local control plane, the one install recipe, the
demo, and the object bodies the demo and the tests share.

The image and `pip install .` carry only `operator/orgkeeper`; this package is imported from the
checkout (`PYTHONPATH=hack`, which the Makefile and pytest's `pythonpath` set).
"""
