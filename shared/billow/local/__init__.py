"""The local stack: DynamoDB Local, the very Lambda handlers behind a small HTTP adapter, and a
scheduler that fires the scheduled handlers. No AWS account involved."""
