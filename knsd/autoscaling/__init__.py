"""Knative's autoscaling, reimplemented as pure functions: config, metric windows, bounds, scale to zero.

The KPA decision itself is `knsd.autoscaler`. Source of truth: knative/serving knative-v1.23.0.
"""
