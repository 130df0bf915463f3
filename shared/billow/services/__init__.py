"""Use cases and the ports they need. Imports the domain; never boto3, pynamodb or powertools."""
