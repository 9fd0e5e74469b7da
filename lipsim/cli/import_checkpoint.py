"""`python -m lipsim import-checkpoint`: convert a released LipSim checkpoint to our format.

Reads the public code's torch dict (model_state_dict with `module.model.` keys, duplicated
under `base.*`) with torch.load(weights_only=True) -- never full unpickling -- maps it onto
a LipSimNet of the given preset (see lipsim.models.checkpoint) and writes a lipsim-repro/1
checkpoint atomically.
"""

from __future__ import annotations

from lipsim.cli._args import parser


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--src", required=True, help="released checkpoint (.pth/.pt)")
    ap.add_argument("--preset", required=True, help="architecture preset, e.g. small")
    ap.add_argument("--image-size", type=int, required=True, help="e.g. 224")
    ap.add_argument("--emb-dim", type=int, required=True, help="e.g. 1792 (DreamSim ensemble)")
    ap.add_argument("--stage", required=True, choices=["pretrained", "finetuned"],
                    help="training stage the checkpoint comes from")
    ap.add_argument("--margin", type=float, default=None,
                    help="hinge margin of a finetuned checkpoint")
    ap.add_argument("--teacher", required=True, help="e.g. dreamsim_ensemble")
    ap.add_argument("--out", required=True, help="checkpoint to write")
    args = ap.parse_args(argv)
    if args.stage == "finetuned" and args.margin is None:
        ap.error("--margin is required with --stage finetuned")
    if args.stage == "pretrained" and args.margin is not None:
        ap.error("--margin applies to --stage finetuned only")

    from pathlib import Path

    from lipsim.models import import_released, save_checkpoint

    net = import_released(args.src, args.preset, args.image_size, args.emb_dim)
    save_checkpoint(args.out, net, stage=args.stage, margin=args.margin, teacher=args.teacher,
                    meta={"imported_from": str(Path(args.src).resolve()),
                          "source": "released LipSim checkpoint"})
    n = sum(p.numel() for p in net.parameters())
    print(f"import-checkpoint: {args.src} -> {args.out} ({args.preset}, {n / 1e6:.1f}M "
          f"parameters, {args.stage}" + (f", margin {args.margin:g}" if args.margin is not None
                                         else "") + ")")
    return 0
