"""The canonical systems flowlab analyses, one subpackage each (DESIGN.md: "One engine, many systems").

No system imports another; none imports plots, the report or the command line.
"""
