"""Monitoring of served features: drift of live traffic from a version's training data
(``drift``: the checks and the report; ``records``: the stored reports)."""
