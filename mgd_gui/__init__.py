"""MGD Studio's desktop application (PySide6 + pyqtgraph): a view over :mod:`engine`.

The GUI holds no training logic: forms edit an :class:`engine.config.ExperimentConfig`,
a worker thread calls :func:`engine.run.run_experiment`, and the engine's events feed the
plots. Nothing here imports torch at start-up; the heavy parts load in background threads.
"""

__version__ = "0.1.0"
