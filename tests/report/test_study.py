"""ftbench.report.study: the pairs differenced and the seed's hybrid/qlora/galore trio."""

from ftbench.common import config
from ftbench.report import study


def test_pairs_and_roles(project):
    p = config.load()
    assert ("hybrid", "qlora") in study.pairs(p) and ("galore", "qlora") in study.pairs(p)
    assert ("hybrid", "galore") in study.pairs(p) and ("qlora", "base") in study.pairs(p)
    assert study.roles(p) == ("hybrid", "qlora", "galore")
    assert ("ensemble", "hybrid") in study.pairs(p) and ("ensemble", "base") in study.pairs(p)
