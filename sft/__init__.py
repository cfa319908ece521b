"""Placeholder: built by its own issue (see the README's roadmap)."""
