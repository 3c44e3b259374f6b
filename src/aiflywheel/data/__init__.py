"""Data in: ingest, clean, PII redaction, splits and the data-quality report."""
