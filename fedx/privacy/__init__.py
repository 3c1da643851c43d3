"""Differential privacy, the data owners' release policy, and the audit ledger."""
