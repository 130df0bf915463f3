"""Credits use cases (docs/credits.md): one module per action over `billow.domain.credits`."""
