"""Configuration: the operator's `flux-pmi.toml` and the shipped registry of départements."""
