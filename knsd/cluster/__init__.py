"""Talking to a Kubernetes cluster with Knative Serving: the only place that imports `kubernetes`."""
