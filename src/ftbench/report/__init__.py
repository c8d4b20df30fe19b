"""The report: metrics/report.md, a self-contained metrics/report.html (plots embedded), metrics/report.json
and metrics/pareto.json, from the records every earlier stage wrote under metrics/.

Quality with paired-bootstrap intervals, pairwise differences with p-values, the seed's expectation,
every evaluated model ranked by quality against its total cost (a model's cost is its whole chain: the
hybrid's is the QLoRA stage + the merge + its GaLore stage + its evaluation) with the differences the
test set can resolve, resources per stage and per model, Pareto and loss-curve plots, the data summary
and provenance.

The modules, each importing only modules named before it: study (the models, runs, pairs and metrics
compared), inputs, costs, quality, ranking, results (every number, computed once), summary (report.json);
render (the Table/Figure/Section types, markdown and HTML), cells, figures, provenance, quality_sections,
ranking_sections, resources_section, sections (the ten sections in order).
"""
