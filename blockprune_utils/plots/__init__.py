"""Plots of the studies: each function takes result rows (a DataFrame) and returns (figure, table)."""
