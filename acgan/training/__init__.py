"""Training one class split: the loop, the AC-GAN losses and the checkpointed training state."""
