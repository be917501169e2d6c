"""Local upstream servers that speak each provider's real wire protocol, for tests and bench."""
