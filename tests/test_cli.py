import subprocess
import sys

from helpers import ROOT, subprocess_env


def run_main(*flags, timeout=600):
    """Runs the CLI in a fresh process on 8 simulated CPU devices, without the persistent
    compile cache: executables with cross-device collectives loaded from that cache deadlock
    on simulated CPU devices (XLA:CPU rendezvous timeout)."""
    env = subprocess_env(8)
    return subprocess.run([sys.executable, "-m", "faceaging.main", "--compilation_cache=", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_missing_utkface_exits_nonzero_with_instructions_and_writes_nothing(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    result = run_main("--config=configs/utk.py:tiny", f"--workdir={workdir}",
                      f"--config.data.manual_dir={tmp_path / 'empty'}",
                      f"--config.data.data_dir={data_dir}")
    assert result.returncode == 1
    assert "UTKFace.tar.gz" in result.stderr and "UTKFace/" in result.stderr
    assert not workdir.exists() and not data_dir.exists()
