"""The shared figures: loss curves read from the trainer's metrics."""

import json

import matplotlib

matplotlib.use("Agg")

from minillama.plots import loss_curves, read_metrics  # noqa: E402


def test_loss_curves_plot_train_and_validation(tmp_path):
    records = [{"step": s, "tokens": 100 * s, "loss": 5.0 / s} for s in range(1, 6)]
    records[-1]["val_loss"] = 1.5
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_metrics(path) == records
    ax = loss_curves({"run": path, "again": records})
    lines = ax.get_lines()
    assert len(lines) == 4                       # train + validation for each run
    assert list(lines[0].get_xdata()) == [100, 200, 300, 400, 500]
    assert list(lines[0].get_ydata()) == [r["loss"] for r in records]
    assert list(lines[1].get_ydata()) == [1.5]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["run (train)",
                                                                       "run (validation)"]
