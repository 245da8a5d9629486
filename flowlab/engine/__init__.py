"""The engine: model-agnostic analyses of a gradient flow (DESIGN.md "One engine, many systems").

It knows no system, no SymPy, no plot and no command line. Submodules are imported where used,
so importing this package is free.
"""
