"""Tally: the package-and-billing core of a clinic practice-management system."""
