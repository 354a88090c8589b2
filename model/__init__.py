"""VGG-style image classifier: architecture, datasets, training and export."""
