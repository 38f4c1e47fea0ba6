"""`knsd loadtest`: a hey-compatible load tester that also watches the service scale."""
