"""Study A: ischemic stroke lesions in 3D ((2+1)D convolution, input size, DiceBCE vs GDL+CE).

``data``: volumes, patches and evaluation (what a run trains on); ``report``: tables, claims, texts;
``measure``: the A2 memory/time and A5 sampler measurements; ``step``: one measured training step.
"""

from seglib.studies.stroke.data import *  # noqa: F401,F403
from seglib.studies.stroke.measure import memory_and_time, memory_benchmark, sampler_benchmark, sampler_study  # noqa: F401
from seglib.studies.stroke.report import (  # noqa: F401
    baseline_label, claims, curve_history, describe_a1, describe_a2, describe_a3, describe_a5, describe_a6, headline,
    index_summary, overlay_cases, table_a1, table_a2, table_a5, table_results,
)
