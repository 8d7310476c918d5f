"""The suite's guard (tests/conftest.py): every test starts from the same global state."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GlobalState

pytest_plugins = ["pytester"]


def test_restore_undoes_every_change_and_names_the_ones_a_test_should_undo(tmp_path):
    state = GlobalState()
    threads, cwd = torch.get_num_threads(), os.getcwd()
    before = torch.rand(3)
    torch.set_num_threads(threads + 1)
    os.chdir(tmp_path)
    os.environ["RESEMB_TEST_LEAK"] = "1"
    os.environ["PL_GLOBAL_SEED"] = "7"  # seed_everything's, set by design
    torch.use_deterministic_algorithms(True)  # Trainer(deterministic=True)'s, by design
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(123)
    np.random.seed(123)
    logger = logging.getLogger("resemb_pl")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    logger.propagate = False

    left = state.restore()
    assert sorted(line.split(":")[0] for line in left) == [
        "os.environ['RESEMB_TEST_LEAK']", "os.getcwd()", "torch.get_default_dtype()",
        "torch.get_num_threads()"]
    assert f"torch.get_num_threads(): {threads} -> {threads + 1}" in left
    assert (torch.get_num_threads(), os.getcwd()) == (threads, cwd)
    assert "RESEMB_TEST_LEAK" not in os.environ
    assert os.environ.get("PL_GLOBAL_SEED") == state.environ.get("PL_GLOBAL_SEED")
    assert torch.get_default_dtype() == torch.float32
    assert not torch.are_deterministic_algorithms_enabled()
    assert handler not in logger.handlers and logger.propagate
    # the RNG is back where it was: the same draw again
    assert GlobalState().restore() == []
    state.restore()
    assert torch.equal(torch.rand(3), before)


def test_a_test_that_leaves_a_change_errors_at_teardown(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_leaky="""
        import os, torch

        def test_leaks_threads():
            torch.set_num_threads(torch.get_num_threads() + 1)
            torch.manual_seed(1)  # the RNGs are restored without an error

        def test_leaks_env(monkeypatch):
            os.environ["RESEMB_TEST_LEAK"] = "1"
            monkeypatch.setenv("RESEMB_TEST_UNDONE", "1")  # monkeypatch undoes this one

        def test_sees_the_initial_state():
            assert "RESEMB_TEST_LEAK" not in os.environ
            assert torch.get_num_threads() == int(os.environ["EXPECTED_THREADS"])
            seeded = torch.Generator().manual_seed(0)
            assert torch.equal(torch.rand(2), torch.rand(2, generator=seeded))
    """)
    os.environ["EXPECTED_THREADS"] = str(torch.get_num_threads())
    try:
        result = pytester.runpytest("-p", "no:randomly")
    finally:
        del os.environ["EXPECTED_THREADS"]
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines([
        "*test_leaks_threads left global state changed*torch.get_num_threads()*",
        "*test_leaks_env left global state changed*RESEMB_TEST_LEAK*"])
    assert "RESEMB_TEST_UNDONE" not in result.stdout.str().split("short test summary")[-1]
