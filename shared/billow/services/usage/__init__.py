"""Usage-based billing use cases: records submitted (`ingest`), allowances checked at submission
(`allowances`), charge limits (`limits`) and rating (`rating`)."""
