"""The ToyShift demo (``python -m demo``, ``make demo``): the paper's claim in miniature on a CPU.

It writes the ToyShift world (:mod:`lib.toy`), generates its CG-Aug twin (:mod:`generation`), trains
with the project's engine (:mod:`lib.engine`) and evaluates every method (:mod:`demo.evaluation`).
The library never imports this package or :mod:`generation`; the demo uses both.
"""
