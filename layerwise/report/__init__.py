"""Rendering only: terminal tables, JSON, charts. The only place (with cli.py) that prints."""
