"""Side by side: the configuration options that differ between runs, their final and best
losses, and their evaluations, as a terminal table, one JSON object, or a self-contained HTML
page with the loss curves overlaid.

Everything is read through :class:`~vaekit.runs.directory.RunDir`, so a missing or damaged run is one
:class:`~vaekit.errors.RunDirError` naming it.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

from vaekit.errors import ConfigError, RunDirError
from vaekit.io.files import atomic_write_text
from vaekit.runs.directory import RunDir
from . import figures as viz

LOSS_KEYS = ("test_loss", "val_loss", "train_loss")  # the first that every run has is compared


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_run(path: str | Path) -> dict[str, Any]:
    """The configuration, per-epoch metrics and evaluation of one run (validated)."""
    rd = RunDir(path)
    try:
        cfg, shape = rd.read_config()
        return {"run": str(path), "options": {**cfg.flat(), "data_shape": shape},
                "history": rd.read_metrics(), "evaluation": rd.read_evaluation()}
    except RunDirError as e:
        raise RunDirError(f"cannot compare run {path}: {e}") from None


def read_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """:func:`read_run` of every path (at least one)."""
    if not paths:
        raise ConfigError("give at least one run directory to compare")
    return [read_run(p) for p in paths]


def comparison(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the comparison shows, as plain data (the ``--json`` object).

    Parameters
    ----------
    runs : sequence of dict
        What :func:`read_runs` returned.

    Returns
    -------
    dict
        ``differing_options`` (names, in configuration order), ``loss`` (the metric compared:
        ``test_loss``, else ``val_loss`` or ``train_loss``, whichever every run has) and
        ``runs``: per run its ``run`` path, ``options`` (only the differing ones), ``epochs``,
        ``final_loss``, ``best_loss``, ``best_epoch`` and ``evaluation`` (``log_likelihood``,
        ``log_likelihood_stderr``, ``importance_samples``, ``n_examples``, ``data``,
        ``split``; None if never evaluated). Non-finite numbers are None.
    """
    names = list(runs[0]["options"])
    differing = [k for k in names if len({repr(r["options"][k]) for r in runs}) > 1]
    have = [set().union(*(row.keys() for row in r["history"])) for r in runs]
    loss = next((k for k in LOSS_KEYS if all(k in h for h in have)), "train_loss")
    out = []
    for r in runs:
        series = [(row["epoch"], row.get(loss)) for row in r["history"]]
        good = [(v, e) for e, v in series if finite(v)]
        best = min(good) if good else (None, None)
        ev = r["evaluation"]
        out.append({"run": r["run"], "options": {k: r["options"][k] for k in differing},
                    "epochs": len(series),
                    "final_loss": series[-1][1] if series and finite(series[-1][1]) else None,
                    "best_loss": best[0], "best_epoch": best[1],
                    "evaluation": None if ev is None else {
                        k: (ev.get(k) if finite(ev.get(k)) or isinstance(ev.get(k), str) else None)
                        for k in ("log_likelihood", "log_likelihood_stderr", "importance_samples",
                                  "n_examples", "data", "split")}})
    return {"differing_options": differing, "loss": loss, "runs": out}


# -- the table -------------------------------------------------------------------------------
def show(v: Any) -> str:
    """A value in one table cell: sizes as 400,200; a data path by its file name."""
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v)) if v else "none"
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    text = str(v)
    return Path(text).name if ("/" in text or "\\" in text) else text


def table_rows(c: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per run) of the comparison table."""
    what = c["loss"].replace("_", " ")
    header = ["run", *c["differing_options"], "epochs run", f"final {what}",
              f"best {what} (epoch)", "log p(x) +- stderr (K)"]
    rows = []
    for r in c["runs"]:
        ev = r["evaluation"]
        ll = "n/a"
        if ev is not None and ev["log_likelihood"] is not None:
            se = ev["log_likelihood_stderr"]
            ll = (f"{ev['log_likelihood']:.3f} +- {se:.3f}" if se is not None else
                  f"{ev['log_likelihood']:.3f}") + f" (K={ev['importance_samples']})"
        rows.append([r["run"], *(show(r["options"][k]) for k in c["differing_options"]),
                     str(r["epochs"]),
                     "n/a" if r["final_loss"] is None else f"{r['final_loss']:.4f}",
                     "n/a" if r["best_loss"] is None else f"{r['best_loss']:.4f} ({r['best_epoch']})",
                     ll])
    return header, rows


def printable(s: str) -> str:
    """A cell for a terminal: control characters (from file names) shown as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in s)


def text_table(c: dict[str, Any]) -> str:
    """The comparison as aligned text columns (numbers right-aligned)."""
    header, rows = table_rows(c)
    cells = [[printable(x) for x in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [i for i in range(len(header))
               if all(x.replace(".", "", 1).replace("-", "", 1).isdigit() for x in (r[i] for r in cells[1:]))]
    lines = ["  ".join(x.rjust(w) if i in numeric else x.ljust(w)
                       for i, (x, w) in enumerate(zip(row, widths))).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    same = "" if c["differing_options"] else "\n(no configuration option differs between these runs)"
    return "\n".join(lines) + same


# -- the HTML page ---------------------------------------------------------------------------
def curves_png(runs: Sequence[dict[str, Any]], loss: str) -> bytes | None:
    """Loss per epoch of every run, overlaid: ``loss`` solid, the training loss dashed."""
    if not any(r["history"] for r in runs):
        return None
    plt = viz._plt()  # the package's one matplotlib setup (Agg backend, readable sizes)
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(runs):
        epochs = [row["epoch"] for row in r["history"]]
        styles = [(loss, "-o")] + ([("train_loss", "--.")] if loss != "train_loss" else [])
        for key, style in styles:
            values = [row.get(key, math.nan) for row in r["history"]]
            label = f"{r['run']} ({key.split('_')[0]})"
            ax.plot(epochs, values, style, color=colors(i % 10), markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.set_title(f"{loss.replace('_', ' ')} (solid) and train loss (dashed), negative ELBO")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return viz.png_bytes(fig)


CSS = ("body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;"
       "color:#1a1a1a}table{border-collapse:collapse;font-size:.9rem}th,td{border:1px solid #ccc;"
       "padding:.2rem .6rem;text-align:right}th{background:#f2f2f2}td:first-child,th:first-child"
       "{text-align:left}img{max-width:100%}.muted{color:#666;font-size:.9rem}")


def html_page(runs: Sequence[dict[str, Any]]) -> str:
    """A self-contained page: the overlaid curves (an embedded PNG) and the table."""
    esc = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    c = comparison(runs)
    header, rows = table_rows(c)
    grid = ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in r) + "</tr>" for r in rows) +
            "</table>")
    png = curves_png(runs, c["loss"])
    img = ("<p>No run has finished an epoch yet.</p>" if png is None else
           f'<img alt="loss curves of the compared runs" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode()}">')
    hybrid = (" A VAE-GAN's loss (objective vaegan) is measured in its own discriminator's "
              "features: it compares with no other run, and it has no log p(x)."
              if any(r["options"].get("objective") == "vaegan" for r in runs) else "")
    note = ("" if c["differing_options"] else
            "<p>No configuration option differs between these runs.</p>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>vaekit: comparison of runs</title>"
            f"<style>{CSS}</style></head><body>\n<h1>Comparison of {len(rows)} runs</h1>\n"
            f"{grid}{note}\n<p class=\"muted\">Losses are the negative ELBO per example in nats "
            "(lower is better); log p(x) is importance-sampled with K samples (higher is better), "
            f"with its standard error.{hybrid}</p>\n<h2>Loss per epoch</h2>\n"
            f"{img}\n</body></html>\n")


def write_html(runs: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Write the comparison page to ``out`` (``.html``) atomically; returns its path."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--html must name a .html file, got '{out}'")
    if out.is_dir():
        raise ConfigError(f"--html {out} is a directory; give a file name")
    atomic_write_text(out, html_page(runs))
    return out


__all__ = ["read_runs", "comparison", "text_table", "html_page", "write_html"]
