"""Benchmarks behind ``unbroken bench``: each measures a figure and, in the same run, the
baseline it is judged against.

Exceptions::

    BenchError            a benchmark could not produce its figure (a child failed, a
                          pipeline refused a segment)
"""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark could not produce its figure."""
