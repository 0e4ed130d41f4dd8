"""``avbench analyze``: UAVM's representation analyses, robustness and event types for logged runs.

``--run`` takes a seed run or a parent run (then every finished seed); ``--dataset`` takes every
parent of a dataset (``--strategy`` narrows it). Results go to each seed run in MLflow
(``analysis/<what>.json``, metrics ``analysis/...``, a PNG); parents get the mean/std over seeds.
Analyses a strategy cannot support are skipped with its stated reason. An analysis that fails on one
run is reported at the end (exit code 1, or 2 when every failure is a user error) and the others go on.
"""

from __future__ import annotations

import argparse

# The analyses by name, for the help only (avbench.analysis.driver.WHATS is the list; importing it here
# would load torch and the tracking stack for every ``avbench --help``; tests/test_cli_startup.py keeps
# the two equal).
WHAT_HELP = "probe, retrieval, attention, tsne, robustness, event-types"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="probe, retrieval, attention, t-SNE, robustness, event types of runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", action="append", help="run id (seed or parent); repeatable")
    src.add_argument("--dataset", help="every parent run of this dataset")
    p.add_argument("--strategy", help="with --dataset: only these strategies (comma-separated)")
    p.add_argument("--sweep-points", choices=["include", "exclude", "only"], default="include",
                   help="with --dataset: include, exclude or take only the rows created by avbench sweep")
    p.add_argument("--what", required=True, help=f"comma-separated: {WHAT_HELP}, or all")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--baseline", default="late_fusion",
                   help="robustness baseline: a run id, or a strategy with a run on the same cache "
                        "(default late_fusion)")
    p.add_argument("--per-class", type=int, default=5, help="retrieval subset: clips per class (default 5)")
    p.add_argument("--retrieval-inputs", choices=["normalised", "raw"], default="normalised",
                   help="retrieval inputs L2-normalised per step as in training (default), or raw as the "
                        "UAVM authors' retrieval scripts load them (feat_norm False)")
    p.add_argument("--probe-per-class", type=int, default=0,
                   help="probe on N clips per class (5: the authors' subset); 0 = every test clip (default)")
    p.add_argument("--tsne-per-class", type=int, default=10, help="t-SNE subset: clips per class (default 10)")
    p.add_argument("--attention-clips", type=int, default=256, help="clips for the attention difference")
    p.add_argument("--clip", type=int, default=0, help="which of those clips the attention heatmap shows")
    p.add_argument("--seeds", help="only seed runs with these seeds (comma-separated)")
    p.add_argument("--noise-levels", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
                   help="robustness noise levels in [0, 1] (default 0 to 1 by 0.1, as MultiBench)")
    p.add_argument("--shift-levels", default="0,0.1,0.2,0.3,0.4,0.5",
                   help="robustness audio shifts as fractions of T (default 0 to 0.5 by 0.1)")
    p.add_argument("--cache", help="the cache the runs were trained on, if it moved")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-done", action="store_true", help="skip analyses already recorded on a run")
    p.add_argument("--no-plots", action="store_true", help="do not log PNG pictures")
    p.set_defaults(func=cmd_analyze)


def parse_whats(text: str) -> list[str]:
    from avbench.analysis.driver import WHATS
    from avbench.errors import UserError

    items = [w.strip().replace("_", "-") for w in text.split(",") if w.strip()]
    if items == ["all"]:
        return list(WHATS)
    bad = [w for w in items if w not in WHATS]
    if bad or not items:
        raise UserError(f"--what: unknown analysis '{', '.join(bad) or text}' (one of {', '.join(WHATS)}, or all)")
    return items


def _levels(text: str, flag: str, top: float) -> tuple[float, ...]:
    from avbench.errors import UserError

    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} expects comma-separated numbers, got '{text}'") from None
    if len(vals) < 2 or vals[0] != 0 or any(b <= a for a, b in zip(vals, vals[1:])) or vals[-1] > top:
        raise UserError(f"{flag} must start at 0, increase, and stay within [0, {top:g}]: got '{text}'")
    return vals


def cmd_analyze(args: argparse.Namespace) -> int:
    from avbench.analysis import driver, loading
    from avbench.errors import UserError
    from avbench.tracking import TAG_CREATED_BY, TAG_SEED

    whats = parse_whats(args.what)
    for name in ("per_class", "tsne_per_class", "attention_clips"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    noise = _levels(args.noise_levels, "--noise-levels", 1.0)
    shift = _levels(args.shift_levels, "--shift-levels", 1.0)
    tracker = loading.open_tracker(args.results_dir)
    if args.run:
        ids = [i for r in args.run for i in loading.seed_runs(tracker, r)]
    else:
        strategies = [s.strip() for s in args.strategy.split(",")] if args.strategy else None
        parents = loading.dataset_parents(tracker, args.dataset, strategies)
        if args.sweep_points != "include":
            want = args.sweep_points == "only"
            parents = [p for p in parents if p.data.tags.get(TAG_CREATED_BY, "").startswith("sweep:") == want]
        ids = [k.info.run_id for p in parents
               for k in sorted(tracker.children(p.info.run_id), key=lambda r: int(r.data.tags.get(TAG_SEED, 0)))]
        if not ids:
            raise UserError(f"no finished runs for dataset '{args.dataset}'"
                            + (f" and strategy {args.strategy}" if args.strategy else ""))
    if args.seeds:
        from avbench.config import parse_seeds

        keep = {str(s) for s in parse_seeds(args.seeds)}
        ids = [i for i in ids if tracker.client.get_run(i).data.tags.get(TAG_SEED) in keep]
        if not ids:
            raise UserError(f"no finished run with seed(s) {args.seeds} among the selected runs")
    opts = driver.Options(per_class=args.per_class, tsne_per_class=args.tsne_per_class,
                          retrieval_inputs=args.retrieval_inputs, probe_per_class=max(0, args.probe_per_class),
                          attention_clips=args.attention_clips, heatmap_clip=args.clip, baseline=args.baseline,
                          cache=args.cache, device=args.device, plots=not args.no_plots,
                          noise_levels=noise, shift_levels=shift)
    parents: list[str] = []
    failures: list[tuple[str, bool]] = []  # (message, is a user error)
    done = skipped = 0
    for run_id in ids:
        run = loading.open_run(tracker, run_id, cache=args.cache, device=args.device)
        print(f"\n== {run.label}")
        for what in whats:
            tag = run.tags.get(driver.TAG_PREFIX + what.replace("-", "_"), "")
            if args.skip_done and tag == "done":
                print(f"-- {what}: already recorded (--skip-done)")
                continue
            try:
                outcome = driver.analyze(run, what, opts)
            except UserError as e:  # e.g. no model.pt: this run only; the others go on
                failures.append((f"{run.label}: {what}: {e}", True))
                print(f"-- {what}: failed: {e}")
                continue
            except Exception as e:
                failures.append((f"{run.label}: {what}: {type(e).__name__}: {e}", False))
                print(f"-- {what}: failed: {type(e).__name__}: {e}")
                continue
            driver.record(run, outcome, opts)
            if outcome.status == "skipped":
                skipped += 1
                print(f"-- {what}: skipped: {outcome.reason}")
            else:
                done += 1
                print(f"-- {what}\n{outcome.text}")
        if run.parent_id and run.parent_id not in parents:
            parents.append(run.parent_id)
    for p in parents:
        tracker.update_parent_summary(p)
    print(f"\n{done} analysis(es) recorded, {skipped} skipped, {len(failures)} failed, on {len(ids)} run(s); "
          f"MLflow: {tracker.uri}")
    if failures:
        print("failed (not recorded; the report lists them as not run):")
        for msg, _ in failures:
            print(f"  {msg}")
        if all(user for _, user in failures):
            raise UserError(f"{len(failures)} analysis(es) failed; first: {failures[0][0]}")
        return 1
    return 0
