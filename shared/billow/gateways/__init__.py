"""Adapters to services outside the table (AWS Lambda today; payment providers later)."""
