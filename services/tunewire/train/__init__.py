"""The train service: turns dataset snapshots into LoRA training runs on the GPU budget."""
