"""The HubEE fixtures (tests/support/hubee.py) for the adapter tests in this folder."""

from support.hubee import demo, demo_template, hub  # noqa: F401 - fixtures, found by name
