"""Metrics and findings over emulator results. numpy only."""
