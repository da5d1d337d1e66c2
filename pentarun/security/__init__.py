"""Tokens, operators and scopes."""
