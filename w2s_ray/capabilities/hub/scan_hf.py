"""SCAN (Lake & Baroni 2018): a navigation command to its action sequence.

Confirmed (2026-11-22) on the loading script `scan.py` and `dataset_infos.json` of the hub's
`scan` dataset (now `scan-tasks/scan-tasks`; the short id redirects; the same script is in
huggingface/datasets `datasets/scan/`): configs `simple`, `length`, `addprim_jump`,
`addprim_turn_left`, `filler_num0`..`filler_num3`, `template_around_right`,
`template_jump_around_right`, `template_opposite_right`, `template_right` (one per split of
https://github.com/brendenlake/SCAN); features `commands`, `actions` (strings, e.g. "jump twice"
-> "I_JUMP I_JUMP"); splits train / test, `simple` 16,728 / 4,182. `datasets` >= 4 refuses the
script, so the loader reads the hub's Parquet conversion: `load_dataset("scan-tasks/scan-tasks",
revision="refs/convert/parquet", data_dir=<config>)`.

The paper's SCAN is `scan_simple`; each other split is registered as `scan_<config>` (sizes are
checked when loaded). The synthetic analogue keeps the name `scan`.
Prompt "Command: <commands>\\nActions:"; label and gold the action sequence. An output's answer is
its first line (after an "Actions:" it restates, before a "Command:" it runs on into) when every
word is an action.
"""

from __future__ import annotations

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped, HubCapability, example
from w2s_ray.capabilities.registry import register

ACTIONS = {"I_WALK", "I_RUN", "I_JUMP", "I_LOOK", "I_TURN_LEFT", "I_TURN_RIGHT"}
CONFIGS = ("simple", "length", "addprim_jump", "addprim_turn_left", "filler_num0", "filler_num1",
           "filler_num2", "filler_num3", "template_around_right", "template_jump_around_right",
           "template_opposite_right", "template_right")


class ScanHF(HubCapability):
    hub_id = "scan-tasks/scan-tasks"
    revision = "refs/convert/parquet"
    # the longest `simple` sequences have 48 actions, several tokens each for a BPE tokenizer
    max_new_tokens = 320
    stop = "\nCommand:"

    def __init__(self, config: str, card_rows: tuple[int, int] | None = None):
        self.name = f"scan_{config}"
        self.hub_data_dir = config
        self.card_rows = card_rows

    def to_example(self, row: dict) -> Example | Dropped:
        actions = " ".join(row["actions"].split())
        if not actions:
            return Dropped("no actions")
        return example(f"Command: {' '.join(row['commands'].split())}\nActions:", actions, actions)

    def extract(self, completion: str) -> str | None:
        # a run-on into a next "Command:" is cut; a restated "Actions:" is skipped
        lines = completion.split("Command:")[0].split("Actions:")[-1].strip().splitlines()
        # markdown emphasis or a closing full stop around the sequence is not part of it
        words = lines[0].strip(" *`.").split() if lines else []
        return " ".join(words) if words and set(words) <= ACTIONS else None


for _config in CONFIGS:
    register(ScanHF(_config, (16728, 4182) if _config == "simple" else None))
