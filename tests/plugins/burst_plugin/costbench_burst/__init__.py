"""A test plugin for costbench: the ``burst`` scenario (queries arrive in bursts) and its metrics."""
