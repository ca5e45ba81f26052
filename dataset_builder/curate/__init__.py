"""Curation stage."""
