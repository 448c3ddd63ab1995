"""flux-pmi: carries pregnancy declarations (DSG, SGR, GRO) from the CNAF to each département's PMI.

The repository root is the package. Its folders follow the data's path:
inbox -> flows (parse, check, route, build) -> schemas (validate) -> seal -> archive -> transport -> trace.
"""

__version__ = "0.1.0"
