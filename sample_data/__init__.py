"""Seeded, deterministic synthetic aerial scenes with exact building footprints (see ``generate``)."""
