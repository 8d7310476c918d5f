"""The machinery behind ``scripts/``, split by job.

- :mod:`~resemb_pl.experiments.registry`: the short names (``plain``, ``avg``, ``gcn``,
  ``att``; backbones by class or module name) and the model specs they stand for;
- :mod:`~resemb_pl.experiments.grid`: :class:`Grid`, the resumable ``results.csv`` that the
  experiment scripts and ``resemb-pl compare`` share, and :func:`fit_and_test`, one run;
- :mod:`~resemb_pl.experiments.tables`: mean ± std per group, CSV and Markdown tables;
- :mod:`~resemb_pl.experiments.cli`: the scripts' common arguments, set-up and error boundary;
- :mod:`~resemb_pl.experiments.tsne`: an exact t-SNE and the k-NN label purity (Fig. 7).

Training on a fraction of the users (Fig. 6) is a method of the data:
:meth:`resemb_pl.data.product.ProcessedData.restrict_training_users`.

Everything is importable from the package itself.

Example::

    from resemb_pl.experiments import Grid, summarize, write_table

    grid = Grid(Path("reports/mine/synthetic_tiny"), settings={"epochs": 1})
    rows = grid.run([{"embedding": "att", "seed": 0}], lambda cell: {"auc": 0.9})
    write_table(grid.out_dir / "mine", summarize(rows, ["embedding"], ["auc"]),
                ["embedding", "n", "auc_mean"], "Mine")
"""

from resemb_pl.experiments.cli import (
    Setup,
    add_common_args,
    cell_model,
    check_args,
    check_budget,
    dataset_name,
    load_data_config,
    parse,
    run_script,
    script_main,
    script_parser,
    setup,
)
from resemb_pl.experiments.grid import Budget, Grid, append_command, cell_id, fit_and_test
from resemb_pl.experiments.registry import (
    CONVS,
    EMBEDDINGS,
    available_backbones,
    backbone_spec,
    check_names,
    conv_class,
    embedding_spec,
    model_spec,
)
from resemb_pl.experiments.tables import (
    METRICS,
    add_pm,
    compare_table,
    csv_value,
    mean_std,
    pm,
    save_figure,
    summarize,
    write_table,
)
from resemb_pl.experiments.tsne import knn_purity, tsne

__all__ = [
    "CONVS", "EMBEDDINGS", "METRICS", "Budget", "Grid", "Setup",
    "add_common_args", "add_pm", "append_command", "available_backbones", "backbone_spec",
    "cell_id", "cell_model", "check_args", "check_budget", "check_names", "compare_table",
    "conv_class", "csv_value", "dataset_name", "embedding_spec", "fit_and_test",
    "knn_purity", "load_data_config", "mean_std", "model_spec", "parse",
    "pm", "run_script", "save_figure", "script_main", "script_parser", "setup", "summarize",
    "tsne", "write_table",
]
