"""Ray Train (V2) DDP fine-tuning: loop, trainer, metrics, checkpoints."""
