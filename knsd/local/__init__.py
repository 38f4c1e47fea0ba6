"""The embedded local runtime: `knsd serve` pods behind a local activator with Knative's KPA."""
