"""Dataset cards: what a dataset is, where its cache lives, and recipe defaults that suit it."""
