"""Error correction after calibration: the Activation Correction Matrix and distillation."""
