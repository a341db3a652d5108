"""The rig's pytest plugin (hil_tests/plugin.py), run in an inner pytest session: infra
failures are retried once and recorded, product failures never; hardware-only tests skip with
the option named; console logs are kept for failing tests only."""

from __future__ import annotations

from pathlib import Path

import pytest

INNER_CONFTEST = """
import pytest

CALLS = {}

@pytest.fixture
def rig(request):
    # stands in for the plugin's rig fixture: these tests are about the retry policy
    return CALLS.setdefault(request.node.name, [])
"""


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_infra_failure_retried_once_and_recorded(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(
        """
        from hil_tests.rig.errors import RigInfraError

        def test_flaky_port(rig):
            rig.append(1)
            if len(rig) == 1:
                raise RigInfraError("console port vanished")

        def test_broken_port(rig):
            rig.append(1)
            raise RigInfraError("no fixture")

        def test_product_failure(rig):
            rig.append(1)
            assert False, "LED never green"

        def test_counts(rig):
            import conftest
            assert {k: len(v) for k, v in conftest.CALLS.items() if k != "test_counts"} == {
                "test_flaky_port": 2, "test_broken_port": 2, "test_product_failure": 1}
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="infra_retry" value="console port vanished"' in junit
    assert 'name="infra_retry" value="no fixture"' in junit
    assert junit.count("infra_retry") == 2  # never for the product failure


def test_hardware_tests_skip_under_sim_naming_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.hardware
        def test_real_radio():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs a real bench: run with --rig path/to/bench.yaml*"])


def test_console_logs_kept_for_failures_only(pytester: pytest.Pytester, micropython: str) -> None:
    pytester.makepyfile(
        """
        def test_passes(rig):
            rig.dut("AP-0001").click()
            rig.dut("AP-0001").console.expect(rb"type 1 saved", timeout=5)

        def test_fails(rig):
            dut = rig.dut("AP-0002")
            dut.click()
            dut.console.expect(rb"type 1 saved", timeout=5)
            dut.wait_led("red", timeout=1)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--rig-artifacts", "art")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LED never red within 1s*"])
    kept = sorted(p.relative_to(pytester.path / "art").as_posix() for p in (pytester.path / "art").rglob("*.log"))
    assert kept == [
        "test_console_logs_kept_for_failures_only.py_test_fails/AP-0001.log",
        "test_console_logs_kept_for_failures_only.py_test_fails/AP-0002.log",
    ]
    log = (pytester.path / "art" / Path(kept[1])).read_text()
    assert "==== start test_console_logs_kept_for_failures_only.py::test_fails ====" in log
    assert "type 1 saved" in log and "==== end" in log
