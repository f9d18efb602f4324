"""Prototype diversity of a ProtoSeg checkpoint as JSON: the results runner's ``div_protoseg`` job.

For each class k with prototypes p_1..p_M (unit vectors), ``contraseg.viz.prototype_diversity``
gives the mean and max of cos(p_j, p_l) over pairs j != l, and ``contraseg.viz.prototype_usage``
counts the pixels of class k each of its prototypes wins (argmax_j cos(f_i, p_j)) over the
first ``--images`` images of the checkpoint's *source* val set (the domain it was trained on;
``contraseg viz prototypes`` counts on the config's first val set, here synthetic-target).

Writes ``{"checkpoint", "iteration", "dataset", "images", "per_class": {class name:
{"prototypes", "mean_cosine", "max_cosine", "used", "pixels"}}}``.

Usage::

    python benchmarks/prototype_diversity_json.py RUN/last.pth --images 100 --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a ProtoSeg last.pth")
    parser.add_argument("--images", type=int, default=100, help="val images for the use counts (default 100)")
    parser.add_argument("--dataset", default="synthetic-source", help="val set name (default synthetic-source)")
    parser.add_argument("--device", default="cpu", help="device of the pass (default cpu)")
    parser.add_argument("--out", type=Path, required=True, help="output JSON")
    args = parser.parse_args(argv)

    from contraseg.data import EvalTransform, build_dataset
    from contraseg.engine.checkpoint import load_checkpoint
    from contraseg.engine.restore import restore_model
    from contraseg.viz import prototype_diversity, prototype_usage, prototypes_from_state

    protos = prototypes_from_state(load_checkpoint(args.checkpoint, map_location="cpu"))
    if protos is None or protos.kind != "protoseg":
        print(f"error: {args.checkpoint} has no ProtoSeg prototype bank", file=sys.stderr)
        return 2
    restored = restore_model(args.checkpoint, args.device)
    val = next((v for v in restored.config.data.val if v.name == args.dataset), None)
    if val is None:
        print(f"error: {args.checkpoint}'s config has no val set {args.dataset}", file=sys.stderr)
        return 2
    dataset = build_dataset(val.name, split=val.split, transform=EvalTransform(resize=restored.config.eval.resize),
                            **dict(val.options))
    restored.model.eval()
    usage = prototype_usage(restored.model, dataset, protos.vectors, protos.labels, args.images,
                            ignore_index=restored.ignore_index)
    rows = prototype_diversity(protos.vectors, protos.labels, usage.counts)
    names = restored.classes
    per_class = {names[k] if k < len(names) else str(k): {key: (None if isinstance(v, float) and math.isnan(v) else v)
                                                          for key, v in row.items()} for k, row in rows.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "iteration": restored.iteration,
                                    "dataset": f"{val.name}/{val.split}", "images": min(args.images, len(dataset)),
                                    "per_class": per_class}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
