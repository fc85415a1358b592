"""OAuth connections to third-party providers, and the local sandbox provider for development and tests."""
