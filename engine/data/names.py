"""The data sets the engine can load (imports nothing: the config schema reads it without torch)."""

DATASETS = ("demo", "cifar10", "cifar100", "imagefolder")
