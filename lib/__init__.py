"""MultiShiftSeg: robust semantic segmentation under covariate and semantic shift."""
