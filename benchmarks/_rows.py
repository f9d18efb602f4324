"""The rows of docs/results.md's tables: which config, which overrides, which baseline.

Each tuple names a row key (the ``row`` of its result JSON and part of its job name), its
docs-ready title (what the row *is*: method, weights, start, labels) and its config. The
plan (``_plan.build_jobs``) turns them into jobs, the tables (``_tables``, ``_tables19``)
into lines. Released values used by the issue-19 rows, with their sources:

* ContrastiveSeg hard start: contrast weight 0 before iteration 5000 of 40000, full weight
  from it, no ramp (tfzhou/ContrastiveSeg@287e5d3, configs/cityscapes/H_48_D_4.json:143 and
  H_48_D_4_MEM.json:143; segmentor/trainer_contrastive.py:209): here ``start_iter =
  source_iters // 8``.
* ContrastiveSeg memory row (H_48_D_4_MEM.json): temperature 0.07 (:138), base temperature
  0.07 (:139), max_views 1 (:141), loss weight 1 (:144), 10 pixels per class and image per
  update (pixel_update_freq, :149). The bank stays at 500 + 500 keys per class as in the
  from-iteration-0 row (released 5000 + 5000, :148), so the two rows differ only in start
  and loss settings.
* WDASS hard start: image-level and contrast terms 0 while ``itern <= 10000`` of 150000,
  full weight after, no ramp (anurag-198/WDASS@7276a27, train.py:483-488; configs/recipes/
  released/wdass_gta_coarse.yaml ``loss.contrast_and_image_start``): here
  ``adapt.wdass.start_iter = adapt_iters // 15``, ``adapt.wdass.warmup_iters = 0``.
"""

from __future__ import annotations

SIZE = "[64,128]"
SOURCE, TARGET = "synthetic-source/val", "synthetic-target/val"
WEAK_KINDS = ("image", "point", "coarse")

#: (row, title, config) of the supervised table, from iteration 0 (the first CPU tables).
SUPERVISED = (
    ("ce", "cross-entropy", "synthetic_source_only.yaml"),
    ("proac", "+ ProAC (0.1)", "synthetic_proac.yaml"),
    ("pixel_contrast", "+ pixel contrast (0.1), from iteration 0", "synthetic_pixel_contrast.yaml"),
    ("pixel_contrast_memory", "+ pixel contrast with memory (0.1, t 0.1, 100 views; 500 + 500 keys per class), "
     "from iteration 0", "synthetic_pixel_contrast_memory.yaml"),
    ("protoseg", "ProtoSeg head (10 prototypes per class; PPC 0.01 + PPD 0.001)", "synthetic_protoseg.yaml"),
)
#: (row, title, config, --set values as functions of the supervised iterations) of the rows
#: with ContrastiveSeg's released hard start (issue 19).
SUPERVISED_DELAYED = (
    ("pixel_contrast_delayed", "+ pixel contrast (0.1), off for the first 1/8 of training (released hard start)",
     "synthetic_pixel_contrast.yaml", lambda it: (f"regulariser.start_iter={it // 8}",)),
    ("pixel_contrast_memory_delayed", "+ pixel contrast with memory, released loss (1, t 0.07, 1 view, 10 pixels "
     "per update; 500 + 500 keys per class), off for the first 1/8 of training (released hard start)",
     "synthetic_pixel_contrast_memory.yaml",
     lambda it: (f"regulariser.start_iter={it // 8}", "regulariser.weight=1", "regulariser.temperature=0.07",
                 "regulariser.base_temperature=0.07", "regulariser.max_views=1",
                 "regulariser.memory_pixels_per_update=10")),
)
#: (row, title, config, --set values as functions of the supervised iterations) of issue 23's rows:
#: the memory row with the released loss and hard start above, each anchor contrasted with a
#: per-anchor sample of the bank instead of the whole bank (ContrastiveSeg paper, Sec. 3.3: random,
#: hardest, semi-hard = top 10 % hardest then random; K+ 1024 / K- 2048 as in
#: losses/memory_sampling.py). Paired against the whole-bank row ``pixel_contrast_memory_delayed``.
MEMORY_SAMPLING = tuple(
    (f"memory_{strategy}_delayed", f"+ pixel contrast with memory, released loss and hard start, {what} "
     "(1024 positives, 2048 negatives per anchor)", "synthetic_pixel_contrast_memory.yaml",
     lambda it, strategy=strategy: (*SUPERVISED_DELAYED[1][3](it), f"regulariser.memory_sampling={strategy}"))
    for strategy, what in (("random", "random examples"), ("hardest", "hardest examples"),
                           ("semi_hard", "semi-hard examples (random among the hardest 10 %)")))
#: (row, title, config, extra --set values, label folder kind) of the adaptation runs.
ADAPTATION = (
    ("finetune", "source-only, +T on the source", "synthetic_source_only_finetune.yaml", (), None),
    ("self_training", "self-training", "synthetic_self_training.yaml", (), "pseudo"),
    ("self_training_proac", "self-training + ProAC", "synthetic_self_training_proac.yaml", (), "pseudo"),
    ("wdass_image", "WDASS, image labels", "synthetic_wdass_image.yaml", (), "image"),
    ("wdass_point", "WDASS, point labels", "synthetic_wdass_point.yaml", (), "point"),
    ("wdass_coarse", "WDASS, coarse labels", "synthetic_wdass_coarse.yaml", (), "coarse"),
    ("wdass_coarse_softmax", "WDASS, coarse labels, prototype-softmax contrast (contraseg's earlier one)",
     "synthetic_wdass_coarse.yaml", ("adapt.wdass.contrast=prototype-softmax",), "coarse"),
)
#: (row, title, baseline row) of the WDASS rows with the released hard start (issue 19).
WDASS_DELAYED = tuple(
    (f"wdass_{kind}_delayed", f"WDASS, {kind} labels, contrast + image-level terms off for the first 1/15 "
     "(released hard start, no ramp)", f"wdass_{kind}") for kind in WEAK_KINDS)
#: (row, title, config) of the standard UDA baselines (issue 19), from the same source-only model.
UDA_BASELINES = (
    ("dacs", "DACS (EMA teacher 0.99, ClassMix, confidence-weighted pseudo labels >= 0.968, rare-class "
     "sampling T 0.01)", "synthetic_dacs.yaml"),
    ("fda", "FDA (beta 0.05, one band; entropy 0.005, eta 2)", "synthetic_fda.yaml"),
)
#: ProAC's UDA as released, stage 2: (stage-1 row, row, title, config) (issue 19). Stage 2
#: starts from the same supervised CE model as stage 1 (the release starts both from
#: ImageNet; the stage-1 model only gives the pseudo labels).
STAGE2 = tuple(
    (stage1, f"st2_{stage1}{suffix}", f"{what}, pseudo labels of the {stage1.upper()} model, init: source-only CE",
     config)
    for stage1 in ("dacs", "fda")
    for suffix, what, config in (("", "self-training", "synthetic_self_training.yaml"),
                                 ("_proac", "self-training + ProAC (0.1)", "synthetic_self_training_proac.yaml")))
ABLATION = (
    ("ablation_no_contrast", "without prototype contrast", ("adapt.wdass.contrast_weight=0",)),
    ("ablation_no_image", "without image-level loss", ("adapt.wdass.image_weight=0",)),
    ("ablation_no_mix", "without ClassMix (no mean-teacher pseudo-label CE)", ("adapt.wdass.mix=false",)),
    ("ablation_weak_ce_only", "none of the three (source CE + weak-label CE only)",
     ("adapt.wdass.contrast_weight=0", "adapt.wdass.image_weight=0", "adapt.wdass.mix=false")),
)
#: Supervised checkpoints evaluated under ProAC's perturbations (issue 19): CE, ProAC, pixel
#: contrast as released (with its hard start) and ProtoSeg; and the perturbations: (key,
#: ``contraseg eval --perturb`` spec or None for clean, column title).
ROBUST_MODELS = ("ce", "proac", "pixel_contrast_delayed", "protoseg")
PERTURBATIONS = (
    ("clean", None, "clean"),
    ("res0.5", "resolution:0.5", "resolution x0.5"),
    ("res1.5", "resolution:1.5", "resolution x1.5"),
    ("night0.5", "illumination:night:0.5", "night 0.5"),
    ("gamma2", "illumination:gamma:2", "gamma 2"),
    ("mask0.25", "mask:0.25", "masked 25%"),
)
#: Images through the student per step at batch 8 (WDASS: source, mixed and target; the
#: image-label kind adds the whole target image; its mean teacher also sees the 8 target images).
IMAGES_PER_STEP = {"self_training": "16", "self_training_proac": "16", "wdass_image": "32 + 8",
                   "wdass_point": "24 + 8", "wdass_coarse": "24 + 8", "wdass_coarse_softmax": "24 + 8",
                   "ablation_no_contrast": "24 + 8", "ablation_no_image": "24 + 8", "ablation_no_mix": "16 + 8",
                   "ablation_weak_ce_only": "16 + 8"}


def title_of(key: str) -> str:
    """The title of a result key (``sup_<row>`` for supervised rows, ``rob_<model>_<perturbation>``)."""
    titles = {f"sup_{row}": title for row, title, *_ in (*SUPERVISED, *SUPERVISED_DELAYED, *MEMORY_SAMPLING)}
    titles.update({row: title for row, title, *_ in (*ADAPTATION, *WDASS_DELAYED, *UDA_BASELINES, *ABLATION)})
    titles.update({row: title for _, row, title, _ in STAGE2})
    titles.update({"oracle": "target-supervised (oracle)", "div_protoseg": "ProtoSeg prototype diversity"})
    for model in ROBUST_MODELS:
        for pkey, _, ptitle in PERTURBATIONS:
            titles[f"rob_{model}_{pkey}"] = f"{titles[f'sup_{model}'].split(' (')[0]}, {ptitle}"
    return titles.get(key, key)
