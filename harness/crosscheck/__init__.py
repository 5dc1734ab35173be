"""Cross-checks against the vendors' own benchmark tools (:mod:`.vendor`: benchmark_app, trtexec).
"""
