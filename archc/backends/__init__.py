"""Backends: the stages after the IR (DESIGN.md §4). Each is imported only when used."""
