"""Training: teacher fine-tuning and student distillation."""
