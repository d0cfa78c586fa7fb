"""Step 2, the return: read the table, validate each row, route it to its home authority (examine.py joins them)."""
