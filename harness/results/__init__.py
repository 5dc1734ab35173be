"""Results: run files (:mod:`.runfile`), processes merged into rows (:mod:`.replicates`), the stores (:mod:`.base`,
:mod:`.store` for DuckDB, :mod:`.store_pg` for PostgreSQL) and accuracy-budget verdicts (:mod:`.accuracy_budget`).
"""
