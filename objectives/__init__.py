"""Objective plugins (one file each) and masking-schedule plugins (schedules.py)."""
