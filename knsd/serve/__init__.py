"""`knsd serve`: the single-flight Stable Diffusion handler that runs in every pod."""
