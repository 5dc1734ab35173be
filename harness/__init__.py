"""Everything between a suite file and a stored result."""
