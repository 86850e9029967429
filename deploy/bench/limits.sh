# Sourced by the bench scripts before they start a provider: lifts the limits that would
# otherwise be the benchmark. Sets and exports variables only.
#
#   . "$ROOT/deploy/bench/limits.sh"    # ROOT: the repository

# The flood comes from one address: the abuse limits would be the benchmark.
export AMP__INGEST__LIMITS__MESSAGES_PER_MINUTE=100000000
export AMP__INGEST__LIMITS__API_REQUESTS_PER_MINUTE=100000000
export AMP__INGEST__LIMITS__TENANT_REQUESTS_PER_MINUTE=100000000
export AMP__INGEST__LIMITS__PENDING_PER_MINUTE=100000000
export AMP__INGEST__LIMITS__MAILBOX_QUOTA=100000000
export AMP__INGEST__REGISTRATION__PER_IP_PER_MINUTE=100000000
# The load generator opens thousands of connections from a few loopback addresses.
export AMP__SERVER__CONNECTIONS__MAX_CONNECTIONS=0
export AMP__SERVER__CONNECTIONS__MAX_CONNECTIONS_PER_ADDRESS=0
