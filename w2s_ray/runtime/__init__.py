"""How work runs, apart from the steps that read like the paper: the training loop and its
parallelisms, checkpoints, Ray Train, the inference backends and engine hosts, the shard reader."""
