"""One evaluation protocol for every model: full ranking / ranked lists -> HR, Recall, NDCG, MRR @ K."""

from llmrec.eval.metrics import DEFAULT_KS, format_table, metrics_from_hits, metrics_from_rank_counts
from llmrec.eval.protocol import (EvalResult, evaluate_ranked_lists, evaluate_scores, metrics_by_bin, parse_ks,
                                  popularity_bins, read_predictions, sid_prefix_accuracy, write_predictions)

__all__ = ["DEFAULT_KS", "EvalResult", "evaluate_ranked_lists", "evaluate_scores", "format_table",
           "metrics_by_bin", "metrics_from_hits", "metrics_from_rank_counts", "parse_ks", "popularity_bins",
           "read_predictions", "sid_prefix_accuracy", "write_predictions"]
