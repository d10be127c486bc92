"""The alignment suite's test cases, the instruction-following benchmark and the report."""
