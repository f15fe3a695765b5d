"""The paired statistics of bench/pass1_paired.py and the verdict score of bench/v1_pair_accuracy.py, with numbers."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sign_test_numbers():
    st = _load("pass1_paired").sign_test
    assert st(0, 0) == 1.0
    assert st(5, 0) == pytest.approx(2 / 32)  # two-sided: 2 * (1/2)^5
    assert st(8, 5) == pytest.approx(0.5811, abs=1e-4)
    assert st(26, 8) == st(8, 26) == pytest.approx(0.00294, abs=5e-5)


def test_paired_diff_numbers():
    mean, se = _load("pass1_paired").paired_diff([0.0, 0.5, 1.0, 0.5], [0.5, 0.5, 1.0, 1.0])
    # differences 0.5, 0, 0, 0.5: mean 0.25, sample s.d. 0.2887, s.e. 0.1443
    assert mean == pytest.approx(0.25) and se == pytest.approx(0.14434, abs=1e-5)


def test_verdict_score():
    vs = _load("v1_pair_accuracy").verdict_score
    assert vs((10, 1), 1, 0) == 1.0 and vs((10, 1), 0, 1) == 0.0
    assert vs((10, 10), 1, 0) == 0.5 and vs(None, 0, 1) == 0.5
