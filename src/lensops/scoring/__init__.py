"""Scoring: a registered model version applied offline to many files, with Ray Data."""
