"""Live plots (pyqtgraph): losses, accuracy, granularity heads, noise robustness, classes."""
