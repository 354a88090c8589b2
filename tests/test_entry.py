"""The `vggserve` command (vggserve_cli): dispatch, fast help, quiet start-up.

Everything runs in child processes started from this tree, as a user's shell
would run `vggserve` (the console script is `vggserve_cli.entry:main`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vggserve_cli.entry import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60
# A flag each command's own --help must name (proof that its parser answered).
FLAGS = {
    "serve": "--model-dir",
    "train": "--preset",
    "classify": "--top-k",
    "explain": "--explain",
    "batch": "--out",
    "bench": "--levels",
    "loadtest": "--users",
}


def child_env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # conftest sets a level for the tests' own process; each test chooses its own.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_python(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env or child_env(),
        cwd=ROOT,
        check=False,
    )


def vggserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_python(["-m", "vggserve_cli", *args], env)


def test_the_console_script_resolves() -> None:
    # pyproject's [project.scripts] names this function; an installed `vggserve` calls it.
    text = (ROOT / "pyproject.toml").read_text()
    assert 'vggserve = "vggserve_cli.entry:main"' in text
    from vggserve_cli import entry

    assert callable(entry.main)


def test_help_lists_every_command_on_one_line_each() -> None:
    result = vggserve("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in COMMANDS:
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name
    assert "--verbose" in result.stdout


def test_each_command_prints_its_own_help_without_tensorflow() -> None:
    # One child for all commands (each import is cached): it must end with no
    # TensorFlow or Keras imported, which is what keeps help instant.
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from vggserve_cli.entry import main
        out = {{}}
        for name in {list(FLAGS)!r}:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                try:
                    code = main([name, "--help"])
                except SystemExit as exc:
                    code = exc.code
            out[name] = {{"code": code, "text": buffer.getvalue()}}
        out["imported"] = sorted({{"tensorflow", "keras"}} & set(sys.modules))
        print(json.dumps(out))
        """
    )
    result = run_python(["-c", script])
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers.pop("imported") == []
    for name, flag in FLAGS.items():
        assert answers[name]["code"] in (0, None), name
        assert flag in answers[name]["text"], f"{name} --help does not name {flag}"


@pytest.mark.parametrize("name", ["train", "explain"])
def test_module_form_help_of_the_commands_vggserve_rewrites(name: str) -> None:
    # train parses before importing model.train; explain puts --explain first.
    result = vggserve(name, "--help")
    assert result.returncode == 0, result.stderr
    assert FLAGS[name] in result.stdout


def best_of(args: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = run_python(args)
        times.append(time.perf_counter() - start)
        assert result.returncode == 0, result.stderr
    return min(times)


def test_help_costs_little_more_than_starting_python() -> None:
    # A ratio to a bare interpreter on the same machine, not an absolute time
    # (the machine is shared). Measured about 1.3x; a TensorFlow import is
    # 50x or more, so 3x leaves room for noise and still catches it.
    bare = best_of(["-c", "pass"])
    helped = best_of(["-m", "vggserve_cli", "--help"])
    assert helped / bare < 3.0, f"vggserve --help {helped:.3f} s vs python -c pass {bare:.3f} s"


def test_an_unknown_command_is_one_line_and_status_2() -> None:
    result = vggserve("nonsense")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "unknown command 'nonsense'" in line
    assert "serve" in line and "loadtest" in line


def test_an_unknown_global_flag_is_one_line_and_status_2() -> None:
    result = vggserve("--quiet", "serve")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "--quiet" in line and "--verbose" in line


def test_a_wrong_flag_of_train_answers_without_training() -> None:
    result = vggserve("train", "--preset", "nope")
    assert result.returncode == 2
    assert "--preset" in result.stderr


ENV_PROBE = textwrap.dedent(
    """
    import json, os, sys
    from vggserve_cli import entry, quiet
    entry.run = lambda name, argv: 0  # what main sets up, not the command itself
    code = entry.main(sys.argv[1:])
    print(json.dumps({
        "code": code,
        "level": os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
        "hooked": any(isinstance(f, quiet.QuietImport) for f in sys.meta_path),
    }))
    """
)


def probe(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run_python(["-c", ENV_PROBE, *args], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_tensorflow_is_quiet_by_default() -> None:
    assert probe("serve") == {"code": 0, "level": "3", "hooked": True}


def test_a_level_the_user_set_is_kept() -> None:
    assert probe("serve", env=child_env(TF_CPP_MIN_LOG_LEVEL="1")) == {
        "code": 0,
        "level": "1",
        "hooked": True,
    }
    assert probe("serve", env=child_env(TF_CPP_MIN_LOG_LEVEL="0"))["hooked"] is False


def test_verbose_is_accepted_and_leaves_tensorflow_alone() -> None:
    assert probe("--verbose", "serve") == {"code": 0, "level": None, "hooked": False}
    result = vggserve("--verbose", "train", "--help")
    assert result.returncode == 0, result.stderr
    assert "--preset" in result.stdout


NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796529383.261344   25448 port.cc:153] oneDNN custom operations are on.\n"
    "W0000 00:00:1796529383.261666   25448 cudart_stub.cc:31] a warning\n"
)
KEPT = "E0000 00:00:1796529389.430260   25448 cuda_platform.cc:52] an error\nplain line\n"


@pytest.fixture
def fake_tensorflow(tmp_path: Path) -> Path:
    """A `tensorflow` package whose import prints abseil lines, as the real one's libraries do."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"import os\nos.write(2, {(NOISE + KEPT).encode()!r})\nLOADED = True\n"
    )
    return tmp_path


def test_the_first_tensorflow_import_drops_startup_lines_below_the_level(
    fake_tensorflow: Path,
) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from vggserve_cli import quiet
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        quiet.quiet_tensorflow(os.environ)
        import tensorflow
        assert tensorflow.LOADED
        assert not isinstance(tensorflow.__loader__, quiet.QuietLoader)
        print("after", file=sys.stderr)
        """
    )
    env = child_env(PYTHONPATH=os.pathsep.join([str(fake_tensorflow), str(ROOT)]))
    result = run_python(["-c", script], env)
    assert result.returncode == 0, result.stderr
    # Level 2 drops INFO and WARNING (and abseil's preamble); errors and other lines stay.
    assert result.stderr == KEPT + "after\n"


def test_verbose_shows_the_startup_lines(fake_tensorflow: Path) -> None:
    env = child_env(PYTHONPATH=os.pathsep.join([str(fake_tensorflow), str(ROOT)]))
    script = (
        "import sys\nfrom vggserve_cli import entry\n"
        "entry.run = lambda name, argv: __import__('tensorflow') and 0\n"
        "sys.exit(entry.main(['--verbose', 'serve']))\n"
    )
    result = run_python(["-c", script], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == NOISE + KEPT


@pytest.mark.slow
def test_real_tensorflow_import_is_quiet() -> None:
    script = (
        "import sys\nfrom vggserve_cli import entry\n"
        "entry.run = lambda name, argv: __import__('tensorflow') and 0\n"
        "sys.exit(entry.main(['serve']))\n"
    )
    result = run_python(["-c", script])
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" not in result.stderr
    assert "port.cc" not in result.stderr and "cudart_stub" not in result.stderr
