"""`agebench age-photo`: age (or rejuvenate) every face of an ordinary photo with trained methods.

The work is `agebench.pipeline.photo_aging`'s; this module holds the arguments and the order of the steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import command_parser

_DESCRIPTION = "`agebench age-photo`: age (or rejuvenate) every face of an ordinary photo with trained methods."
EXAMPLE = "agebench age-photo me.jpg --method cyclegan_keras --to old --out me_old.png"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers (imports nothing heavy: `--help` is instant)."""
    examples = [
        EXAMPLE,
        "agebench age-photo me.jpg --all-methods --to young --out compare.png",
        "agebench age-photo me.jpg --method cyclegan_agevec --progression --out strip.png",
    ]
    parser = command_parser(sub, "age-photo", "age every face of a photo with trained methods", examples, _DESCRIPTION)
    parser.add_argument("photo", type=Path, help="a photo with one or more faces (JPEG, PNG, ...)")
    parser.add_argument("--method", help="a trained method (models/<method>/model.pt)")
    parser.add_argument("--all-methods", action="store_true", help="one figure: the photo aged by every method")
    parser.add_argument("--progression", action="store_true", help="strip of the largest face across all groups")
    parser.add_argument("--to", default="old", help="old, young, or a group of the method (e.g. 50s)")
    parser.add_argument("--out", type=Path, required=True, help="output image (.png keeps pixels exact)")
    parser.add_argument("--params", default="params.yaml", help="the params.yaml the models were trained with")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of <method>/model.pt")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda")
    parser.add_argument("--min-face", type=int, default=48, help="smallest crop side in pixels to translate")
    parser.add_argument("--feather", type=float, default=0.2, help="feathered fraction of the crop at each edge")
    parser.set_defaults(parser=parser)  # run() reports option conflicts as argparse does (usage + exit 2)
    return parser


def run(args: argparse.Namespace) -> int:
    """Age the photo's faces and write the image, figure or strip; returns the exit status."""
    if args.all_methods == bool(args.method):
        args.parser.error("give exactly one of --method NAME or --all-methods")
    if not 0 < args.feather <= 0.45:
        args.parser.error("--feather must be in (0, 0.45]: the fraction of the crop side that fades at each edge")
    from PIL import Image
    from tqdm import tqdm

    from agebench.infra.common import atomic_path, check_output_path
    from agebench.params.load import load_params
    from agebench.pipeline import photo_aging as pa

    # Before any work: --out must not be the photo itself (or a folder), so the original is never replaced.
    check_output_path(args.out, "file", inputs=[args.photo])
    from agebench.infra.devices import select_device
    from agebench.pipeline.generate import load_trained

    params = load_params(args.params)
    names = [args.method]
    if args.all_methods:
        names, missing = pa.trained_methods(params, args.models)
        if missing:
            print(f"age-photo: not trained, left out: {', '.join(missing)} (dvc repro train@<method>)")
        if not names:
            raise pa.PhotoError(f"no trained method under {args.models}/ (run dvc repro first)")
    single = not (args.all_methods or args.progression)  # the others write a PNG figure whatever the suffix
    if single and Image.registered_extensions().get(args.out.suffix.lower()) is None:
        raise pa.PhotoError(f"{args.out}: unknown image format {args.out.suffix!r} (use .png or .jpg)")
    pa.open_photo(args.photo).close()  # the photo's header: missing, unreadable or too large, in milliseconds
    pa.check_request(names, params, args.models, args.to, args.progression)
    device = select_device(args.device)
    bar = tqdm(total=3 + len(names), desc="age-photo", unit="step", disable=None)
    rgb, original = pa.load_photo(args.photo)
    bar.set_postfix_str("detecting faces")
    detections = pa.ph.detect_faces(rgb, pa.load_detector())
    bar.update()
    plans = pa.ph.plan_faces(detections, rgb.shape[0], rgb.shape[1], args.min_face)
    if not detections:
        bar.close()
        raise pa.NoFaceError(
            f"{args.photo}: no face found (YuNet, score >= {pa.DETECT_SCORE}); nothing written. Use a photo in which "
            "a face is visible, upright and at least about 40 px between the eyes"
        )
    from metrics.age import load_age_networks

    bar.set_postfix_str("loading the age estimator")

    age_nets = load_age_networks()
    bar.update()
    if args.progression:
        bar.close()
        return pa.progression(args, params, names[0], rgb, plans, age_nets, device)
    small = args.all_methods  # the figure is a few inches wide: keep downscaled panels, not full-size copies
    panels = [("input", pa.ph.for_detection(rgb, pa.PANEL_MAX_SIDE)[0] if small else rgb)]
    for name in names:
        bar.set_postfix_str(f"loading and running {name}")
        method = load_trained(name, params, args.models / name, device)
        aged, results = pa.age_faces(rgb, plans, method, params, args.to, age_nets, args.feather)
        bar.update()
        tqdm.write(pa.summary(results, f"age-photo {name} --to {args.to}"))
        panels.append((f"{name} ({args.to})", pa.ph.for_detection(aged, pa.PANEL_MAX_SIDE)[0] if small else aged))
    bar.set_postfix_str("writing")
    if args.all_methods:
        with atomic_path(args.out) as tmp:
            tmp.write_bytes(pa.comparison_png(panels))
    else:
        pa.save_like(pa.to_original_mode(panels[1][1], original), original, args.out)
    bar.update()
    bar.close()
    print(f"age-photo: wrote {args.out}")
    return 0
