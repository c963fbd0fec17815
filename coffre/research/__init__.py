"""The research hub: authorised projects, their pseudonymised extracts, and aggregates
that disclose no small cell (docs/research.md).

Everything here runs on the sovereign side, with the vault's keys; what leaves it is the
extract's Parquet files and the counts, never a patient id or a key.
"""
