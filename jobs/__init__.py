"""The jobs an operator runs: the night, deliveries, acknowledgements, re-emission, purge, holds.

A job drives the stages below it (inbox, flows, schemas, seal, archive, transport,
trace) in the data's order; no stage ever calls back into a job.
"""
