"""Curation: from a pool of questions to a small, hard, diverse training set like s1K (not built yet)."""
