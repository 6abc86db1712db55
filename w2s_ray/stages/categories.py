"""Fig. 5's five ground-truth categories of a (weak, strong) label pair, in its order; "strong"
is the model that relabeled (WTS, or WTS-2 in Fig. 6). Apart from the stages that assign them,
so the report reads their names without importing the models."""

CATEGORIES = {"true_con": "True Con.", "false_con": "False Con.", "strong_true": "WTS True",
              "weak_true": "Weak True", "false_incon": "False Incon."}
