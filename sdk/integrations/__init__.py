"""Integrations with other frameworks. ``clipsam.integrations.ray``: segment datasets with Ray Data."""
