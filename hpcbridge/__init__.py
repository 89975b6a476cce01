"""hpcbridge."""
