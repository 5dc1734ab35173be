"""Scenario loops: how queries are issued and timed, one module per scenario with its settings beside it.

- :mod:`.base`: the ``Scenario`` contract, ``ScenarioResult`` and the timed-region helpers.
- :mod:`.single_stream`, :mod:`.offline`, :mod:`.server`: the built-in scenarios.
- :mod:`.registry`: scenarios found through the ``costbench.scenarios`` entry-point group.
"""
