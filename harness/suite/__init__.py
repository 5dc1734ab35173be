"""A suite as data: its schema (:mod:`.schema`), a planned case (:mod:`.case`) and why a case is skipped (:mod:`.skips`).

Imports nothing else of the harness, so every other part can use it.
"""
