"""Side-by-side evaluation: certified accuracy of a model on a dataset, per method."""
