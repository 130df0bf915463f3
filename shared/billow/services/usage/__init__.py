"""Usage use cases: recording usage, allowances, rating stored usage and charge limits."""
