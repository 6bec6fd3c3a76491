"""Curriculum monitor (placeholder)."""
