"""The paper's eight datasets, loaded from their published sources (hub or offline mirror)."""

MODULES = ("gsm8k", "mc_taco", "scan_hf", "creak", "ecqa", "esnli", "openbookqa", "sciq")
