"""lazyrich.plots: figures (cone paper Figs. 1a-1c, 2 and training curves) and the HTML report of a run."""

from lazyrich.plots.figures import (
    FIGURES,
    adjacent_by_step,
    fig_adjacent_distances,
    fig_cone,
    fig_curves,
    fig_distances,
    fig_kernel_stats,
    fig_reference_distances,
    fig_switching,
    save_figure,
    save_figures,
)
from lazyrich.plots.rebalance import fig_layer_balance, fig_lenet_rebalance, fig_rhm_sample_complexity
from lazyrich.plots.single_neuron import fig_single_neuron
from lazyrich.plots.early_time import (fig_early_time_discrepancy, fig_early_time_logits, fig_early_time_losses,
                                       fig_early_time_norm, fig_early_time_residual_split)
from lazyrich.plots.teacher_student import fig_teacher_student_maps, fig_teacher_student_neurons
from lazyrich.plots.grokking import fig_grokking_curves, fig_grokking_heatmaps
from lazyrich.plots.filters import fig_filter_grid, fig_filter_smoothness
from lazyrich.plots.phase_diagram import fig_condensation, fig_phase_diagram, fig_phase_rd, read_condensation
from lazyrich.plots.report import experiment_report, format_headline, headline_numbers, report

__all__ = [
    "FIGURES",
    "adjacent_by_step",
    "fig_reference_distances",
    "fig_adjacent_distances",
    "fig_cone",
    "fig_switching",
    "fig_curves",
    "fig_distances",
    "fig_kernel_stats",
    "save_figure",
    "save_figures",
    "headline_numbers",
    "format_headline",
    "report",
    "experiment_report",
    "fig_lenet_rebalance",
    "fig_layer_balance",
    "fig_phase_diagram",
    "fig_phase_rd",
    "fig_condensation",
    "read_condensation",
    "fig_single_neuron",
    "fig_early_time_losses",
    "fig_early_time_logits",
    "fig_early_time_discrepancy",
    "fig_early_time_norm",
    "fig_early_time_residual_split",
    "fig_teacher_student_maps",
    "fig_teacher_student_neurons",
    "fig_rhm_sample_complexity",
    "fig_grokking_heatmaps",
    "fig_grokking_curves",
    "fig_filter_smoothness",
    "fig_filter_grid",
]
