"""The inbox: where upstream systems drop DSG, GRO and SGR material, claimed exactly once."""
