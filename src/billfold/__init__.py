"""Billfold: self-hostable billing and entitlements."""

__version__ = "0.1.0"
