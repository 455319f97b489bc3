"""`charrnn inspect`: what a trained model's cells learned, and how far back it remembers."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.cli.group import cli, progress_bar
from charrnn.errors import UserError
from charrnn.files.outputs import OutputFile

PAGE_TOKENS = 20_000  # the most a page shows: with a 2 x 512 model's hidden states, a page of about 27 MB


@cli.command(name="inspect")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--split", type=click.Choice(["val", "test"]),
              help="Inspect a split of the corpus the model was trained on.")
@click.option("--max-chars", type=click.IntRange(2, 10_000_000), default=20_000, show_default=True,
              help="Inspect the first N tokens of the text (characters, or words for a word-level model).")
@click.option("--feature", "features", multiple=True, metavar="NAME=REGEX",
              help="A feature of your own: 1 on the characters a regular expression matches (repeatable).")
@click.option("--top", type=click.IntRange(1, 100), default=3, show_default=True, help="Units shown per feature.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a page: the text coloured by any unit's value, the next-token guesses on hover.")
@click.option("--page-kinds", default=None, metavar="KINDS",
              help="The values the page holds, comma-separated: h, c, tanh_c, i, f, g, o (LSTM), r, z, n (GRU).  "
                   "[default: h, and c for an LSTM]")
@click.option("--unit", "start", default=None, metavar="LAYER:KIND:UNIT",
              help="The unit the page opens at, e.g. 2:h:87.  [default: the best unit of the first feature]")
@click.option("--states", "states_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write every value at every step to an .npz (float16 per layer and kind; see docs/inspect.md).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Draw gate saturation, the memory curve and the gradient's decay (the plot extra).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--strict", is_flag=True, help="Stop on tokens not in the vocabulary instead of skipping them.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXTS.")
@click.option("--force", is_flag=True, help="Replace output files that exist (never a file of a run).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def inspect_model(ctx, run, texts, split, max_chars, features, top, html_path, page_kinds, start, states_path,
                  plot_path, as_json, strict, encoding, force, quiet):
    """Show what the cells of a trained model track, how its gates saturate, and how far back it remembers.

    TEXTS are files, folders of them, or - for standard input; or give --split val.

    \b
    Examples:
      charrnn inspect runs/shakespeare/member-1 --split val --html cells.html
      charrnn inspect runs/code program.py --feature 'indent=(?m)^ +' --json
      charrnn inspect runs/shakespeare/member-1 --split val --plot memory.png --states states.npz
    """
    import json
    import tempfile

    from charrnn.inspect.features import user_feature
    from charrnn.inspect.report import Settings, inspect
    from charrnn.runs.run import load_model

    if bool(texts) == bool(split):
        raise click.UsageError("give either TEXT files to inspect or --split val|test")
    if (page_kinds is not None or start is not None) and html_path is None:
        raise click.UsageError("--page-kinds and --unit shape the page; give --html, or leave them out")
    if force and not (html_path or states_path or plot_path):
        raise click.UsageError("--force replaces output files; give --html, --states or --plot, or leave out --force")
    outputs = {flag: OutputFile(path, flag, force).check() for flag, path in
               (("--html", html_path), ("--states", states_path), ("--plot", plot_path)) if path is not None}
    extra = [user_feature(spec) for spec in features]
    if "--plot" in outputs:
        from charrnn.inspect.plot import pyplot_for

        pyplot_for(outputs["--plot"])
    model, params, vocab, meta = load_model(run, "inspect")
    if model.config.bidirectional:
        raise UserError("a bidirectional model reads the future: its units do not describe reading a text")
    kinds = page_kinds_of(page_kinds, model.config.cell)
    opening = unit_of(start, model) if start is not None else None
    if opening is not None and opening[1] not in kinds:
        raise click.BadParameter(f"the page holds {', '.join(kinds)}, not {opening[1]}; add it to --page-kinds",
                                 param_hint="--unit")
    with tempfile.TemporaryDirectory(prefix="charrnn-inspect-") as scratch:
        ids, unknown = read_ids(texts, split, meta, vocab, encoding, strict, Path(scratch), max_chars)
        settings = Settings(extra=extra, top=top, page_kinds=kinds if html_path else (), page_tokens=PAGE_TOKENS,
                            states_dir=Path(scratch) if states_path else None)
        with progress_bar(len(ids), "inspect", "tok", quiet, unit_scale=True) as bar:
            report = inspect(model, params, vocab, ids, settings, on_tokens=bar.update)
        described = (f"{model.config.num_layers} x {model.config.hidden_size} {model.config.cell.upper()}, "
                     f"{len(ids):,} tokens of {', '.join(texts) or split}")
        if "--html" in outputs:
            write_page(outputs["--html"], report, vocab, described, opening)
        if "--states" in outputs:
            write_states(outputs["--states"], report, vocab)
    if "--plot" in outputs:
        from charrnn.inspect.plot import plot_report

        plot_report(report, outputs["--plot"], described)
    if as_json:
        click.echo(json.dumps({**report.as_json(), "unknown": unknown, "model": described}, allow_nan=False))
        return
    for line in tables(report, unknown, described):
        click.echo(line)


def page_kinds_of(spec: str | None, cell: str) -> tuple[str, ...]:
    from charrnn.inspect.values import kinds

    if spec is None:
        return ("h", "c") if cell == "lstm" else ("h",)
    asked = tuple(k.strip() for k in spec.split(",") if k.strip())
    wrong = [k for k in asked if k not in kinds(cell)]
    if wrong or not asked:
        raise click.BadParameter(f"{', '.join(wrong) or 'nothing'} is not a kind of a {cell.upper()}'s values; "
                                 f"choose among {', '.join(kinds(cell))}", param_hint="--page-kinds")
    return asked


def unit_of(spec: str, model) -> tuple[int, str, int]:
    """'LAYER:KIND:UNIT' -> (layer from 0, kind, unit), or one line naming what is wrong."""
    from charrnn.inspect.values import kinds

    parts = spec.split(":")
    cfg = model.config
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        raise click.BadParameter(f"{spec!r} must look like LAYER:KIND:UNIT, e.g. 1:h:0", param_hint="--unit")
    layer, kind, unit = int(parts[0]), parts[1], int(parts[2])
    if not 1 <= layer <= cfg.num_layers:
        raise click.BadParameter(f"there is no layer {layer}: the model has layers 1 to {cfg.num_layers}",
                                 param_hint="--unit")
    if kind not in kinds(cfg.cell):
        raise click.BadParameter(f"{kind!r} is not a kind of a {cfg.cell.upper()}'s values; choose among "
                                 f"{', '.join(kinds(cfg.cell))}", param_hint="--unit")
    if not 0 <= unit < cfg.hidden_size:
        raise click.BadParameter(f"there is no unit {unit}: units are 0 to {cfg.hidden_size - 1}", param_hint="--unit")
    return layer - 1, kind, unit


def read_ids(texts, split, meta, vocab, encoding, strict, scratch: Path, max_chars: int):
    """The first `max_chars` token ids of the texts or the split, and how many unknown tokens were skipped."""
    import numpy as np

    if split:
        from charrnn.cli.evaluate import split_tokens

        ids, unknown = np.asarray(split_tokens(meta, split)[:max_chars], dtype=np.int64), 0
    else:
        from charrnn.data.corpus import resolve_sources
        from charrnn.score.eval_text import encode_sources

        tokens = encode_sources(resolve_sources(list(texts)), vocab, encoding, strict, scratch)
        ids, unknown = np.asarray(tokens.ids[:max_chars], dtype=np.int64), tokens.unknown
    if len(ids) < 2:
        raise UserError(f"nothing to inspect in {', '.join(texts) or split}: it needs at least two tokens the model "
                        f"knows ({unknown:,} unknown); give a longer text")
    return ids, unknown


def write_page(destination: OutputFile, report, vocab, described: str, opening):
    from charrnn.inspect.page import page

    if opening is None:  # the unit that best tracks the first feature that varies, among the page's values
        page_kinds = {kind for _, kind in report.kept.values}
        best = [units[0] for units in report.correlations.ranked(1, page_kinds).values() if units]
        opening = (best[0].layer, best[0].kind, best[0].unit) if best else (0, "h", 0)
    shown = len(report.kept.top_ids)
    about = (f"{described}" + (f" (the page shows the first {shown:,})" if shown < report.tokens else "") +
             ". Values are stored as 8-bit numbers, each unit over its own range; probabilities to the nearest 1/255.")
    destination.write(page(report, vocab, "charrnn inspect", about, opening))


def write_states(destination: OutputFile, report, vocab):
    """The kept values as float16 arrays `layer{L}_{kind}` (T, H), with `token_ids` (T,) and `vocabulary` (V,)."""
    import io
    import zipfile

    import numpy as np

    count = min(len(report.token_ids), max((np.load(p, mmap_mode="r").shape[0] for p in report.states.values()),
                                           default=0))
    with destination.writer() as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for (layer, kind), path in sorted(report.states.items()):
            archive.write(path, f"layer{layer + 1}_{kind}.npy")  # streamed from disk, not loaded whole
        for name, array in (("token_ids", np.asarray(report.token_ids[:count], dtype=np.int32)),
                            ("vocabulary", np.array(vocab.tokens, dtype=str))):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())


def tables(report, unknown: int, described: str) -> list[str]:
    """The figures as a few short tables."""
    lines = [f"inspected {described}" + (f" ({unknown:,} unknown tokens skipped)" if unknown else ""), "",
             "units that track features (Pearson r; layer, kind, unit):"]
    for name, found in report.found.items():
        shown = " | ".join(f"{f.layer + 1} {f.kind} {f.unit} {f.r:+.2f}" for f in found)
        lines.append(f"  {name:<22} {shown or '(constant over the text)'}")
    if report.saturation:
        lines += ["", "gate saturation (share of steps below 0.1 | above 0.9, mean over units; units mostly there):"]
        for row in report.saturation:
            lines.append(f"  layer {row['layer'] + 1} {row['gate']}   {row['left']:.2f} | {row['right']:.2f}   "
                         f"({row['units_mostly_left']} | {row['units_mostly_right']} of {row['units']})")
    lines += ["", "memory: nats per token, reading only the last k tokens",
              "  k     " + " ".join(f"{str(k):>6}" for k, _ in report.memory),
              "  nats  " + " ".join(f"{x:6.3f}" for _, x in report.memory),
              "", "gradient decay: |d loss_t / d h_(t-k)|, every layer's h",
              "  k     " + " ".join(f"{k:>8}" for k, _ in report.decay),
              "  norm  " + " ".join(f"{x:8.2e}" for _, x in report.decay)]
    return lines
