"""Loaders for human-rated IQA datasets in their published layouts."""
