"""Result tables and plots people would rather look at than read."""

from __future__ import annotations

import csv
import io
import json

from orchestrator import storage


def tune_results(rows: list[dict], curves: dict[str, list[tuple[int, float]]], tune_cfg, experiment_uri: str, st):
    """Write trials.csv, trials.json, trials.png (metric per epoch) and params.png (metric against each
    searched field) under the experiment; return (csv URI, [plot URIs])."""
    put = lambda name, data: storage.write_bytes(storage.join(experiment_uri, name), data, st.endpoint_url, st.region)  # noqa: E731
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows)
    put("trials.csv", text.getvalue().encode())
    put("trials.json", json.dumps(rows, indent=2, default=str).encode())
    put("trials.png", _curves_png(curves, tune_cfg.metric))
    put("params.png", _params_png(rows, tune_cfg))
    return storage.join(experiment_uri, "trials.csv"), [storage.join(experiment_uri, n) for n in ("trials.png", "params.png")]


def _figure(width=7.0, height=4.5, ncols=1):
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _curves_png(curves: dict[str, list[tuple[int, float]]], metric: str) -> bytes:
    fig, axes = _figure()
    ax = axes[0][0]
    for trial_id, curve in sorted(curves.items()):
        if curve:
            epochs, values = zip(*curve)
            ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, label=trial_id[-12:])
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial (short lines: stopped early)")
    ax.grid(alpha=0.3)
    if len(curves) <= 16:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _params_png(rows: list[dict], tune_cfg) -> bytes:
    keys = list(tune_cfg.space)
    fig, axes = _figure(width=4.0, height=3.6, ncols=len(keys))
    best_col = f"best_{tune_cfg.metric}"
    for ax, key in zip(axes[0], keys):
        kind = next(iter(tune_cfg.space[key]))
        pts = [(r[key], r[best_col]) for r in rows if r.get(best_col) is not None and key in r]
        if kind in ("choice", "grid"):
            labels = [json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in tune_cfg.space[key][kind]]
            xs = [labels.index(json.dumps(x) if isinstance(x, (list, dict)) else str(x)) for x, _ in pts]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        else:
            xs = [x for x, _ in pts]
            if kind == "loguniform":
                ax.set_xscale("log")
        ax.scatter(xs, [y for _, y in pts], s=22, alpha=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel(best_col)
        ax.grid(alpha=0.3)
    return _png(fig)
