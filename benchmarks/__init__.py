"""Timing scripts: each answers one question and prints its ratio against the reference."""
