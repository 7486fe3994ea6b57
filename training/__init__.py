"""PINet training: synthetic-distortion pre-training (stage 1), fine-tuning (stage 2), evaluation."""
