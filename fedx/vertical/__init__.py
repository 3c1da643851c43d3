"""Vertical federation: parties that hold different columns of the same people (PSI, vertical GLM)."""
