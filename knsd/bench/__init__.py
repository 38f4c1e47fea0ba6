"""`knsd bench`: load and generation timings of a model family on this machine."""
