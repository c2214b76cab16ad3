"""Evaluation task plugins (one file each); ``tasks.base`` holds the contract and shared helpers."""
