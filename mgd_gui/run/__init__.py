"""Running the engine: the worker thread, progress, log and error reporting."""
