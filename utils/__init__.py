"""Shared settings, errors and helpers; imports nothing else of the project."""
