"""Benchmarks that print figures (never asserted in tests): `speed` on the real SD UNet graphs."""
