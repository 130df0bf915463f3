"""Billow: serverless subscription billing. See docs/architecture.md for the layers."""
