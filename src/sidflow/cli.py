"""The ``sidflow`` command: what is not a DAG step.

    sidflow predict --model results/demo/models/student-kd images/ more/*.png --output preds.csv
    sidflow validate-config [--configfile experiments/cifake.yaml]
    sidflow hash FILE...          # sha256 to pin a dataset archive in config
    sidflow dataset add mine data/mine [--train sd14] [--dry-run]   # your own images: sheet + overlay
    sidflow train-student --spec spec.json   # also: torchrun ... -m sidflow.cli train-student
    sidflow export --model results/demo/models/student-kd --format onnx torchscript
    sidflow matrix --mode cross --configfile experiments/lsun-cross.yaml   # one experiment per cell
    sidflow explain --model results/demo/models/explainer --detector results/demo/models/student-kd \
        photo.jpg --output why.jsonl --html why.html
    sidflow serve --model results/demo/models/explainer --detector results/demo/models/student-kd

The pipeline itself runs with ``snakemake --profile profiles/local``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sidflow import __version__


def cmd_predict(args) -> int:
    from sidflow.devices import select_device
    from sidflow.predict import (
        ResultsFile,
        check_inputs,
        load_predictor,
        output_format,
        predict_paths,
    )

    fmt = output_format(args.output, args.format) if args.output else None
    items = check_inputs(args.paths)  # every argument, before any work
    predictor = load_predictor(args.model, str(select_device(args.device)), args.backbone)
    counts = {"real": 0, "fake": 0, "quarantined": 0}
    results = ResultsFile(args.output, fmt) if args.output else None  # opened after the model
    try:
        for row in predict_paths(predictor, items, args.batch_size, progress=args.progress):
            counts[row["verdict"]] += 1
            if results:
                results.write(row)
            if not args.quiet:
                pf = "      -" if row["p_fake"] is None else f"{row['p_fake']:.4f}"
                print(
                    f"{pf}  {row['verdict']:<11}  {row['path']}"
                    + (f"  ({row['reason']})" if row["reason"] else "")
                )
    except BaseException:
        if results and (partial := results.keep_partial()):
            print(f"# stopped: the {results.rows} results so far are in {partial}", file=sys.stderr)
        raise
    if results:
        results.commit()
    print(f"# {sum(counts.values())} files: {counts['fake']} fake, {counts['real']} real, "
          f"{counts['quarantined']} quarantined", file=sys.stderr)  # fmt: skip
    return 0


def cmd_validate(args) -> int:
    from sidflow.checks import load_checked
    from sidflow.config import ConfigError

    try:  # exactly the workflow's checks (sidflow.checks: the one validation path)
        cfg, _ = load_checked(args.config, overlays=args.configfile or [])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"ok: experiment {cfg['experiment']['name']!r}, datasets {cfg['use_datasets']}")
    return 0


def cmd_train_student(args) -> int:
    from sidflow.io import setup_logging
    from sidflow.train.launch import run_spec_file

    setup_logging(None)
    run_spec_file(args.spec)
    return 0


def cmd_export(args) -> int:
    from sidflow.io import setup_logging
    from sidflow.models.export import export_student

    setup_logging(None)
    for fmt, r in export_student(args.model, args.format, args.atol).items():
        print(
            f"{fmt}: {Path(args.model) / r['path']} (max |logit diff| vs PyTorch {r['max_abs_diff']:.2e})"
        )
    return 0


def cmd_hash(args) -> int:
    from sidflow.io import sha256_file

    for f in args.files:
        print(f"{sha256_file(f)}  {f}")
    return 0


def cmd_dataset_add(args) -> int:
    from sidflow.data.dataset_add import add_dataset

    result = add_dataset(args.name, args.path, train=args.train, sheet=args.sheet,
                         overlay_dir=args.overlay_dir, force=args.force, dry_run=args.dry_run,
                         verify=args.verify, kfold=args.kfold or 0)  # fmt: skip
    print(result.summary())
    return 0


def cmd_matrix(args) -> int:
    from sidflow.matrix import run_matrix

    return run_matrix(args.mode, args.configfile or [], args.profile, args.dry_run)


def _explain_session(args):
    """The explainer (+ detectors) that ``explain`` and ``serve`` load from their arguments."""
    from sidflow.devices import select_device
    from sidflow.explain import ExplainSession

    return ExplainSession(args.model, args.detector or [], str(select_device(args.device)),
                          args.backbone, args.max_new_tokens)  # fmt: skip


def cmd_explain(args) -> int:
    import json

    from sidflow.explain import explain_paths, json_row, page_html
    from sidflow.io import atomic_path
    from sidflow.predict import check_inputs

    items = check_inputs(args.paths)
    results = list(explain_paths(_explain_session(args), items))
    lines = "".join(json.dumps(json_row(r)) + "\n" for r in results)
    if args.output:
        with atomic_path(args.output) as tmp:
            Path(tmp).write_text(lines)
    else:
        sys.stdout.write(lines)
    if args.html:
        with atomic_path(args.html, suffix=".html") as tmp:
            Path(tmp).write_text(page_html(results))
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("fake", "real", "quarantined")}
    print(f"# {len(results)} files: {counts['fake']} fake, {counts['real']} real, "
          f"{counts['quarantined']} quarantined (the explainer's verdicts)", file=sys.stderr)  # fmt: skip
    return 0


def cmd_serve(args) -> int:
    from sidflow.serve import serve

    session = _explain_session(args)
    print(f"sidflow serve: http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    serve(session, args.host, args.port, args.max_upload_mb)
    return 0


def cmd_gc(args) -> int:
    from sidflow.gc import remove, unreferenced

    root = Path(".")
    garbage, refs = unreferenced(root, extra=args.configfile or [])
    for label, why in refs.failed.items():
        print(f"# not planned (its stores are not protected): {label}: {why}", file=sys.stderr)
    if refs.failed and args.yes and not args.force:
        print("refusing --yes while a config could not be planned (its stores would look "
              "unused); fix it, or add --force", file=sys.stderr)  # fmt: skip
        return 2
    for store in garbage:
        print(store)
    if args.yes:
        remove(root, garbage)
    print(f"# {len(garbage)} store(s) no experiment references"
          + ("; removed" if args.yes else "; sidflow gc --yes removes them"), file=sys.stderr)  # fmt: skip
    return 0


def cmd_teacher_dir(args) -> int:
    from sidflow.checks import load_checked
    from sidflow.config import ConfigError

    try:
        cfg, plan = load_checked(args.config, overlays=args.configfile or [], sources=False)
        if args.teacher not in cfg["teachers"]:
            raise ConfigError(f"teacher {args.teacher!r} is not defined under teachers")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(plan.teacher_dir(args.teacher))
    return 0


def _explainer_args(p) -> None:
    p.add_argument(
        "--model", required=True, help="an explainer folder, e.g. results/demo/models/explainer"
    )
    p.add_argument(
        "--detector", action="append", help="a student or RINE folder to run beside it (repeatable)"
    )
    p.add_argument("--backbone", default=None, help="RINE detectors: their CLIP backbone folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--max-new-tokens", type=int, default=48, help="length of the explanation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"sidflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict", help="classify image files, folders or globs with a trained student"
    )
    p.add_argument("paths", nargs="+", help="files, folders (recursive) or glob patterns")
    p.add_argument(
        "--model", required=True,
        help="a student or RINE model folder, e.g. results/demo/models/student-kd or results/demo/models/rine",
    )  # fmt: skip
    p.add_argument(
        "--backbone", default=None,
        help="RINE only: its CLIP backbone folder (default: the one its card names, results/backbones/clip)",
    )  # fmt: skip
    p.add_argument(
        "--output",
        help="write results to this file (written to a temporary file, moved into place at the "
        "end); its format comes from the suffix: .csv, .tsv or .json (any case)",
    )
    p.add_argument(
        "--format", choices=["csv", "tsv", "json"], help="format of --output, whatever its suffix"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--quiet", action="store_true", help="do not print one line per file")
    p.set_defaults(func=cmd_predict)
    v = sub.add_parser("validate-config", help="check config.yaml (+ overlays) against the schema")
    v.add_argument("--config", default="config.yaml")
    v.add_argument("--configfile", action="append", help="overlay, as with snakemake --configfile")
    v.set_defaults(func=cmd_validate)
    t = sub.add_parser("train-student", help="train a student from a spec (also under torchrun)")
    t.add_argument("--spec", required=True, help="JSON spec, see sidflow.train.launch")
    t.set_defaults(func=cmd_train_student)
    e = sub.add_parser("export", help="export a student to ONNX / TorchScript with a parity check")
    e.add_argument("--model", required=True, help="a student folder")
    e.add_argument(
        "--format", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"]
    )
    e.add_argument(
        "--atol", type=float, default=1e-3, help="max |logit difference| allowed vs PyTorch"
    )
    e.set_defaults(func=cmd_export)
    h = sub.add_parser("hash", help="print sha256 of files (to pin dataset archives in config)")
    h.add_argument("files", nargs="+")
    h.set_defaults(func=cmd_hash)
    ds = sub.add_parser("dataset", help="bring your own images: sidflow dataset add NAME PATH")
    dsub = ds.add_subparsers(dest="dataset_command", required=True)
    da = dsub.add_parser(
        "add", help="recognise a folder's layout, write its generators-sheet rows and an overlay"
    )
    da.add_argument("name", help="dataset name (lower-case letters, digits, . _ -)")
    da.add_argument("path", help="the folder (relative paths: to where snakemake runs)")
    da.add_argument("--train", nargs="+", help="generators to train on (default: all); each "
                    "fake's own reals are added")  # fmt: skip
    da.add_argument("--sheet", default="config/generators.tsv", help="the generators sheet")
    da.add_argument("--overlay-dir", default="experiments", help="where <NAME>.yaml is written")
    da.add_argument("--force", action="store_true", help="replace the dataset's rows and overlay")
    da.add_argument("--dry-run", action="store_true", help="report and print, write nothing")
    da.add_argument("--verify", action="store_true", help="also open every image with PIL")
    da.add_argument("--kfold", type=int, metavar="K", help="k-fold splits (3-20 folds): every image "
                    "tested once, for small datasets")  # fmt: skip
    da.set_defaults(func=cmd_dataset_add)
    m = sub.add_parser(
        "matrix", help="cross-generator / leave-one-generator-out matrix of experiments"
    )
    m.add_argument("--mode", required=True, choices=["cross", "logo"])
    m.add_argument(
        "--configfile", action="append", help="overlay(s) naming datasets, detectors, base name"
    )
    m.add_argument("--profile", default="profiles/local")
    m.add_argument(
        "--dry-run", action="store_true", help="write the cell overlays and dry-run each cell"
    )
    m.set_defaults(func=cmd_matrix)
    g = sub.add_parser(
        "gc", help="list (--yes: remove) teacher models and caches no experiment uses"
    )
    g.add_argument("--configfile", action="append", help="your overlay: keep what it uses too")
    g.add_argument("--yes", action="store_true", help="remove what is listed")
    g.add_argument("--force", action="store_true", help="--yes even if a preset fails to plan")
    g.set_defaults(func=cmd_gc)
    td = sub.add_parser("teacher-dir", help="print the folder a teacher of this config trains into")
    td.add_argument("teacher")
    td.add_argument("--config", default="config.yaml")
    td.add_argument("--configfile", action="append", help="overlay, as with snakemake --configfile")
    td.set_defaults(func=cmd_teacher_dir)
    x = sub.add_parser("explain", help="the explainer's verdict and reason per image (+ detectors)")
    x.add_argument("paths", nargs="+", help="files, folders (recursive) or glob patterns")
    _explainer_args(x)
    x.add_argument("--output", help="JSON lines file (default: stdout)")
    x.add_argument("--html", help="also write a self-contained HTML page")
    x.set_defaults(func=cmd_explain)
    sv = sub.add_parser("serve", help="a local web page: upload an image, see verdicts and why")
    _explainer_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--max-upload-mb", type=float, default=20.0, help="larger uploads are refused")
    sv.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"sidflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
