"""Step and epoch timings, the hardware probe and FLOP counts behind ``rnnreg bench`` and ``benchmarks/``.

Every timing calls :func:`rnnreg.step.train_step` on a model from :func:`rnnreg.model.build_model` (or on
:class:`PaddedLSTM`, the kernel floor) and checks what came back: a finite loss, and which modules really ran in
low precision (:func:`rnnreg.step.probe_autocast`), so a row is labelled by what ran, never by what was asked for.
The rows of one comparison share one batch and are timed round-robin (one step of each, then again), so a machine
that gets busier half-way slows them all alike: ratios within one run are the figures to read, never ratios
between runs.

Modules, in the order they import each other: ``hardware`` (the CPU, native bf16, the peak estimate),
``workloads`` (models, batches, the main job's data), ``timing`` (FLOPs, the round-robin timer), ``records`` (a
timed case as a table row), ``runner`` (:class:`BenchConfig`, :func:`run_benchmarks`), ``goals`` (the speed
goals), ``output`` (the table, the JSON file and the plot, written through :mod:`rnnreg.fsio`).
"""

from rnnreg.bench.goals import Goal, Timed, goals, goals_from
from rnnreg.bench.hardware import FMA_UNITS, CpuInfo, Hardware, parse_cpuinfo, peak_gflops, probe_hardware, read_cpuinfo
from rnnreg.bench.output import TABLE_HEADER, check_output_path, format_row, plot, write_json
from rnnreg.bench.records import Record, case_record, epoch_record, quartiles, with_ratios
from rnnreg.bench.runner import BenchConfig, growth_points, run_benchmarks, train_one_epoch
from rnnreg.bench.timing import (
    StepCase,
    main_case,
    step_case,
    step_flops,
    time_epochs_round_robin,
    time_round_robin,
    torch_threads,
)
from rnnreg.bench.workloads import (
    AMP,
    MAIN_MODEL,
    MODELS,
    NUM_CLASSES,
    PRECISIONS,
    REGULARIZED_P,
    UNREGULARIZED_P,
    PaddedLSTM,
    Workload,
    build,
    build_main,
    epoch_data,
    low_precision_report,
    main_precisions,
    main_workload,
    make_batch,
    model_config,
    train_config,
)
from rnnreg.cores import free_cores  # the thread count `rnnreg bench` picks; benchmarks/ reads it here

__all__ = [
    "AMP",
    "FMA_UNITS",
    "MAIN_MODEL",
    "MODELS",
    "NUM_CLASSES",
    "PRECISIONS",
    "REGULARIZED_P",
    "TABLE_HEADER",
    "UNREGULARIZED_P",
    "BenchConfig",
    "CpuInfo",
    "Goal",
    "Hardware",
    "PaddedLSTM",
    "Record",
    "StepCase",
    "Timed",
    "Workload",
    "build",
    "build_main",
    "case_record",
    "check_output_path",
    "epoch_data",
    "epoch_record",
    "format_row",
    "free_cores",
    "goals",
    "goals_from",
    "growth_points",
    "low_precision_report",
    "main_case",
    "main_precisions",
    "main_workload",
    "make_batch",
    "model_config",
    "parse_cpuinfo",
    "peak_gflops",
    "plot",
    "probe_hardware",
    "quartiles",
    "read_cpuinfo",
    "run_benchmarks",
    "step_case",
    "step_flops",
    "time_epochs_round_robin",
    "time_round_robin",
    "torch_threads",
    "train_config",
    "train_one_epoch",
    "with_ratios",
    "write_json",
]
