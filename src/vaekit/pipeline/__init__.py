"""Floor 9, the one wiring of vaekit: configuration + data -> a trained run, and run + data -> rows.

The CLI commands, the estimator and the benchmarks call these functions; none of them wires
data, model and trainer itself. So every check (shapes, labels, the likelihood's support, the
run directory's rules) is made here once, for every entry point. :mod:`.training` trains;
:mod:`.using` reads a trained run (rows to score, draws, samplers of codes, a table's imputations);
:mod:`.evaluating` measures it; :mod:`.stacking` builds on a trained run.
"""

from vaekit.pipeline.training import (Log, TrainResult, check_data, check_rows, collapse_warning,
                                      data_location, default_out, fingerprint, label_classes,
                                      num_classes, resolve_defaults, resume_config, same_data,
                                      save_evaluation, stderr, train, validation_split)
from vaekit.pipeline.evaluating import RunEvaluation, evaluate_run, save_run_evaluation
from vaekit.pipeline.using import (Imputed, Rows, check_label, data_rows, fit_sampler, impute_table,
                                   load_run, metric_classifier, rows, run_data, run_sampler, sample,
                                   table_frame, table_schema, training_rows)

__all__ = ["Imputed", "Log", "Rows", "RunEvaluation", "TrainResult", "check_data", "check_label",
           "check_rows", "collapse_warning", "data_location", "data_rows", "default_out",
           "evaluate_run", "fingerprint", "fit_sampler", "impute_table", "label_classes",
           "load_run", "metric_classifier", "num_classes", "resolve_defaults", "resume_config",
           "rows", "run_data", "run_sampler", "same_data", "sample", "save_evaluation",
           "save_run_evaluation", "stderr", "table_frame", "table_schema", "train",
           "training_rows", "validation_split"]
