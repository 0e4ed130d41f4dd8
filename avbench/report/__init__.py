"""Tables and plots from results: console summaries, comparison tables, the report."""
