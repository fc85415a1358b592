"""Integrations with ordered providers: health checks, circuit breakers, failover and rate limits."""
