"""`knsd simulate`: replay a workload through Knative's autoscaling in simulated time, before deploying."""
