"""DynamoDB single-table storage (pynamodb). The only package that imports pynamodb or botocore."""
