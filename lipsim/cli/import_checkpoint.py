"""Convert a released LipSim checkpoint (the authors' layout) to the lipsim-repro format.

Reads the authors' torch dict as their trainer or finetuner saves it (model_state_dict with
`module.`/`model.` prefixes and base.* duplicates; optimizer state with numpy scalars;
epoch, global_step, scheduler) with torch.load(weights_only=True) and an allow-list of numpy
scalar globals -- never full unpickling -- maps it onto a LipSimNet of the given preset
(lipsim.models.released), keeps the Adam state when it maps onto the model, prints every key
it does not import and why, and writes a lipsim-repro/1 checkpoint atomically.
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser
from lipsim.models.net import METRICS


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--src", required=True, help="released checkpoint (.pth/.pt)")
    ap.add_argument("--emb-dim", type=int, required=True, help="e.g. 1792 (DreamSim ensemble)")
    ap.add_argument(
        "--stage",
        required=True,
        choices=["pretrained", "finetuned"],
        help="what the file is: distilled (pretrained) or finetuned",
    )
    ap.add_argument(
        "--margin", type=float, default=None, help="hinge margin of a finetuned checkpoint"
    )
    ap.add_argument(
        "--metric",
        choices=METRICS,
        default=None,
        help="metric a finetuned checkpoint was trained with (the authors': cosine)",
    )
    ap.add_argument("--teacher", required=True, help="e.g. dreamsim_ensemble")
    ap.add_argument("--out", required=True, help="checkpoint to write")
    add_config_options(ap, "import-checkpoint")  # --preset, --image-size
    args = ap.parse_args(argv)
    if args.stage == "finetuned" and args.margin is None:
        ap.error("--margin is required with --stage finetuned")
    if args.stage == "pretrained" and args.margin is not None:
        ap.error("--margin applies to --stage finetuned only")

    from pathlib import Path

    from lipsim.checksum import sha256_file
    from lipsim.models import import_released, save_checkpoint

    imp = import_released(args.src, args.preset, args.image_size, args.emb_dim)
    save_checkpoint(
        args.out,
        imp.net,
        stage=args.stage,
        margin=args.margin,
        teacher=args.teacher,
        metric=args.metric,
        optimizer_state=imp.optimizer_state,
        meta={
            "imported_from": str(Path(args.src).resolve()),
            "imported_sha256": sha256_file(args.src),
            "source": "released LipSim checkpoint",
            **imp.info,
            "ignored_keys": [f"{k}: {why}" for k, why in imp.ignored],
        },
    )
    n = sum(p.numel() for p in imp.net.parameters())
    print(
        f"import-checkpoint: {args.src} -> {args.out} ({args.preset}, {n / 1e6:.1f}M "
        f"parameters, {args.stage}"
        + (f", margin {args.margin:g}" if args.margin is not None else "")
        + ")"
    )
    for key, why in imp.ignored:
        print(f"  not imported as weights: {key} -- {why}")
    return 0
