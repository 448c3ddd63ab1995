"""The département side: take a delivered file in, check it, turn it into tables and scans.

flux-pmi runs at the CNAF; each département's DSI runs this part to receive what was sent:
verify and decrypt the sealed file, check its sequence, read it (`extract`), write the
records as CSV and Parquet with the scans beside them (`output`), and acknowledge it.
"""
