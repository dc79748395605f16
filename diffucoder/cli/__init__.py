"""Thin command-line entry points. Nothing in the library imports this package."""
