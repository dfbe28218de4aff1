"""Kittiwake: a complete mail server in one program."""

__version__ = "0.1.0"
