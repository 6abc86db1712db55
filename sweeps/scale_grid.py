"""The main entry: the weak/strong size grid (see `--help`; README for the presets)."""

import sys

from w2s_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
