"""CG-Aug: coherent generative augmentation of Cityscapes-layout datasets."""
