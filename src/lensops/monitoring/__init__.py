"""Monitoring: what a model's data looked like, kept to compare against what it sees later."""
