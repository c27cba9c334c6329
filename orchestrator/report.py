"""Result tables and plots people would rather look at than read."""

from __future__ import annotations

import csv
import io
import json

from orchestrator import storage


def headline(metrics: dict, split: str = "test") -> str:
    """The two numbers that say how good a model is: perplexity and bits per byte for a language
    model, accuracy and F1 for a classifier."""
    keys = ("perplexity", "bits_per_byte") if f"{split}_perplexity" in metrics else ("accuracy", "f1")
    return "  ".join(f"{split}_{k} {metrics[f'{split}_{k}']:.4f}" for k in keys)


def relied_on(importance: list[dict] | None, most: int = 5) -> str:
    """A line naming the columns a model of a table relies on most (evaluate.column_importance); "" for others."""
    if not importance:
        return ""
    columns = ", ".join(f"{r['column']} {r['accuracy_drop']:+.3f}" for r in importance[:most])
    return f"columns relied on most (test accuracy lost without each): {columns}"


def beside_baseline(accuracy: float, baseline: dict | None) -> str:
    """A line setting a classifier's accuracy beside always answering the most common class (evaluate.baseline),
    saying so where the model does no better, or under a point better; "" for a language model."""
    if not baseline:
        return ""
    line = (f"always answering {baseline['answer']!r}, the most common class in training ({baseline['share']:.0%} of "
            f"its rows), scores accuracy {baseline['accuracy']:.4f}")
    if accuracy >= baseline["accuracy"] + 0.01 or baseline["balanced"]:  # weighed classes trade accuracy for recall
        return line
    line = f"warning: {line}, and the model does {'no' if accuracy <= baseline['accuracy'] else 'hardly'} better"
    if baseline["share"] >= 0.75:  # a rare class the loss has learned to ignore
        line += ("; with classes this uneven, set train.class_weight: balanced, so that the rare ones count as much "
                 "as the common one, and judge by F1 and each class's recall (orchestrator evaluate)")
    return line


def tune_results(rows: list[dict], curves: dict[str, list[tuple[int, float]]], tune_cfg, experiment_uri: str, st):
    """Write trials.csv, trials.json, trials.png (metric per epoch) and params.png (metric against each
    searched field) under the experiment; return (csv URI, [plot URIs])."""
    put = lambda name, data: storage.write_bytes(storage.join(experiment_uri, name), data, st.endpoint_url, st.region)
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
    drawn = {trial_id: curve for trial_id, curve in sorted(curves.items()) if curve}
    for trial_id, curve in drawn.items():
        epochs, values = zip(*curve)
        ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, label=trial_id[-12:])
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial (short lines: stopped early)")
    ax.grid(alpha=0.3)
    if 0 < len(drawn) <= 16:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _params_png(rows: list[dict], tune_cfg) -> bytes:
    keys = list(tune_cfg.space)
    fig, axes = _figure(width=4.0, height=3.6, ncols=len(keys))
    from matplotlib.ticker import NullFormatter
    best_col = f"best_{tune_cfg.metric}"
    for ax, key in zip(axes[0], keys):
        kind = next(iter(tune_cfg.space[key]))
        pts = [(r[key], r[best_col]) for r in rows if r.get(best_col) is not None and key in r]
        if kind in ("choice", "grid"):
            labels = [json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in tune_cfg.space[key][kind]]
            xs = [labels.index(json.dumps(x) if isinstance(x, (list, dict)) else str(x)) for x, _ in pts]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            xs = [x for x, _ in pts]
            if kind == "loguniform":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short ranges
            low, high = tune_cfg.space[key][kind][:2]  # the whole searched range, so gaps in the sampling show
            if kind == "loguniform":
                pad = (high / low) ** 0.04
                ax.set_xlim(low / pad, high * pad)
            else:
                pad = (high - low) * 0.04
                ax.set_xlim(low - pad, high + pad)
        ax.scatter(xs, [y for _, y in pts], s=22, alpha=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel(best_col)
        ax.grid(alpha=0.3)
    return _png(fig)


# ---- the run report -------------------------------------------------------------------------


def run_report(run_uri: str, ckpt, metrics: dict, confusion: list[list[int]], st, history: list[dict] | None = None,
               search: dict | None = None, importance: list[dict] | None = None, baseline: dict | None = None) -> str:
    """Write <run>/report/: index.html beside its PNGs (learning curves, confusion matrix, per-class
    precision/recall/F1, a table's columns by importance, and the search's plots when the run was tuned);
    return the HTML's URI. `search`: {"experiment": name, "plots": [png URIs], "num_trials": n, ...} of the
    search that chose the config; `importance`: evaluate.column_importance; `baseline`: evaluate.baseline."""
    import numpy as np
    import torch

    from orchestrator.engine import per_class

    out = storage.join(run_uri, "report")
    put = lambda name, data: storage.write_bytes(storage.join(out, name), data, st.endpoint_url, st.region)
    labels = ckpt.model_info["label_names"]
    cm = np.asarray(confusion)
    precision, recall, f1 = (t.numpy() for t in per_class(torch.as_tensor(cm)))
    history = history or (ckpt.train_state() or {}).get("history", [])
    language_model = ckpt.config.model.name == "gpt"  # 256 byte classes: per-class plots say nothing
    images = {"curves.png": "Learning curves"}
    put("curves.png", _history_png(history, ("val_bits_per_byte",) if language_model else ("val_accuracy", "val_f1")))
    if not language_model:
        images["confusion.png"] = "Confusion matrix (test split)"
        images["per_class.png"] = "Precision, recall and F1 per class (test split)"
        put("confusion.png", _confusion_png(cm, labels))
        put("per_class.png", _per_class_png(labels, precision, recall, f1))
    if importance:
        images["importance.png"] = "The columns the model relies on: test accuracy lost when a column is shuffled"
        put("importance.png", _importance_png(importance))
    for uri in (search or {}).get("plots", []):  # copied, so the report folder stands alone
        name = f"search-{uri.rsplit('/', 1)[-1]}"
        put(name, storage.read_bytes(uri, st.endpoint_url, st.region))
        images[name] = f"Hyperparameter search {search['experiment']}: {uri.rsplit('/', 1)[-1]}"
    support = cm.sum(axis=1)
    rows = [] if language_model else [(labels[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                                      for i in range(len(labels))]
    against = beside_baseline(metrics.get("test_accuracy"), baseline)
    put("index.html", _html(ckpt, metrics, against, rows, images, search).encode())
    return storage.join(out, "index.html")


def _history_png(history: list[dict], quality: tuple[str, ...]) -> bytes:
    fig, axes = _figure(width=5.5, height=3.8, ncols=2)
    epochs = [h["epoch"] for h in history]
    left, right = axes[0]
    for key in ("train_loss", "val_loss"):
        left.plot(epochs, [h[key] for h in history], marker="o", markersize=3, label=key)
    for key in quality:
        right.plot(epochs, [h.get(key) for h in history], marker="o", markersize=3, label=key)
    for ax, title in ((left, "loss"), (right, " and ".join(quality))):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def _confusion_png(cm, labels: list[str]) -> bytes:
    fig, axes = _figure(width=5.2, height=4.6)
    ax = axes[0][0]
    image = ax.imshow(cm, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45 if max(map(len, labels)) > 2 else 0, fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:  # counts in the cells while they stay readable
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def _per_class_png(labels: list[str], precision, recall, f1) -> bytes:
    import numpy as np

    fig, axes = _figure(width=max(5.0, 0.45 * len(labels) + 2), height=3.6)
    ax = axes[0][0]
    x = np.arange(len(labels))
    for offset, (name, values) in zip((-0.27, 0, 0.27), (("precision", precision), ("recall", recall), ("f1", f1))):
        ax.bar(x + offset, values, width=0.27, label=name)
    ax.set_xticks(x, labels, rotation=45 if max(map(len, labels)) > 2 else 0, fontsize=8)
    ax.set_ylim(min(0.5, float(np.min([precision, recall, f1]))) * 0.95, 1.01)
    ax.set_xlabel("class")
    ax.set_title("precision, recall and F1 per class (test split)")
    ax.legend(fontsize=8, ncol=3, loc="lower left", framealpha=0.95)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _importance_png(importance: list[dict], most: int = 25) -> bytes:
    shown = importance[:most][::-1]  # the most relied on at the top
    fig, axes = _figure(width=6.0, height=0.28 * len(shown) + 1.2)
    ax = axes[0][0]
    ax.barh([r["column"] for r in shown], [r["accuracy_drop"] for r in shown], xerr=[r["std"] for r in shown],
            color="#4c72b0", ecolor="#888")
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_xlabel("test accuracy lost with the column's cells shuffled across rows")
    more = f" (the {most} of {len(importance)} most relied on)" if len(importance) > most else ""
    ax.set_title(f"column importance{more}", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _html(ckpt, metrics: dict, against: str, rows: list[tuple], images: dict[str, str], search: dict | None) -> str:
    from html import escape

    lineage = ckpt.lineage() or {}
    per_class = ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th><th>support</th></tr>"
                 + "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows) + "</table>")
    figures = "".join(f'<figure><img src="{escape(name)}" alt="{escape(title)}"><figcaption>{escape(title)}'
                      "</figcaption></figure>" for name, title in images.items())
    searched = _table((search or {}).items()) if search else "<p>Not tuned: the config was trained as written.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(ckpt.config.name)}: run report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}th,td{{border:1px solid #ddd;padding:3px 9px;text-align:left;font-size:14px}}
th{{background:#f4f4f4}}img{{max-width:100%;border:1px solid #eee}}figure{{margin:1em 0}}
figcaption{{color:#555;font-size:13px}}code{{background:#f4f4f4;padding:1px 4px}}</style></head>
<body><h1>{escape(ckpt.config.name)}</h1>
<p>Checkpoint <code>{escape(ckpt.uri)}</code></p>
<h2>Metrics</h2>{_table(sorted(metrics.items()))}
{f"<p>{escape(against[0].upper() + against[1:])}.</p>" if against else ""}
{figures}
{"<h2>Per class (test split)</h2>" + per_class if rows else ""}
<h2>Hyperparameter search</h2>{searched}
<h2>Lineage</h2>{_table(sorted(lineage.items()))}
<h2>Config (hash {escape(lineage.get("config_hash", ckpt.config.hash()))})</h2><pre>{escape(json.dumps(ckpt.config.to_dict(), indent=2))}</pre>
</body></html>
"""


def _cell(value) -> str:
    from html import escape

    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value))


def _table(pairs) -> str:
    from html import escape

    return "<table>" + "".join(f"<tr><th>{escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in pairs) + "</table>"
