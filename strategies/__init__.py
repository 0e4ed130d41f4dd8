"""Built-in avbench strategies, installed as avbench_strategies and registered through entry points like any plugin."""
