"""Degradation models, intensity normalisation and the shared patch sampler."""
