"""What runs inside Jobs: the trainer, the evaluator, and the built-in small model."""
