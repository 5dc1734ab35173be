"""Reports built from the results store: hardware selection, run comparison, history dashboard, interop.

Everything here reads a store (``costbench.harness.results.store``: a results folder's DuckDB copy or a team's
PostgreSQL store), never run files directly, and
writes self-contained HTML (plotly.js embedded, nothing fetched when the page opens) beside a
machine-readable form (Markdown, CSV, JSON).
"""
