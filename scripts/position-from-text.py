"""Where a toy model's first sampling step puts an object: by the caption, or by the noise?

    python scripts/position-from-text.py --model runs/teacher/out5 [--noises 16] [--json OUT]

Prints, per position word, the share of the object on the side the caption names (1.0: the caption
decides; 0.5: it says nothing) and how often a caption and its opposite put the object on the same
side from the same noise (1.0: the noise decides); see :mod:`edgefusion.toy.position_probe`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgefusion.toy.position_probe import measure_position_control


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a pipeline folder or toy:NAME")
    parser.add_argument("--noises", type=int, default=16, help="starting noises per caption")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = measure_position_control(args.model, args.noises)
    for word, row in result["per_word"].items():
        print(f"{word:7s} named side {row['named_side']:.2f}   noise decides {row['noise_decides']:.2f}")
    print(f"mean    named side {result['named_side']:.2f}   noise decides {result['noise_decides']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
