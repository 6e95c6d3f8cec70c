"""Tests of evomerge.analysis."""
