"""Pure billing rules. Imports nothing from AWS, Stripe, storage or Powertools."""
