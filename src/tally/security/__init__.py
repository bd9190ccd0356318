"""Signing in safely: session lifetimes and a per-user session registry, the two-factor gate,
sign-in throttling's lockout answer and its audit trail. The settings are in tally.settings."""
