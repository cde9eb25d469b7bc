import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_missing_utkface_exits_nonzero_with_instructions_and_writes_nothing(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    result = subprocess.run(
        [sys.executable, "-m", "faceaging.main", "--config=configs/utk.py:tiny",
         f"--workdir={workdir}", f"--config.data.manual_dir={tmp_path / 'empty'}",
         f"--config.data.data_dir={data_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 1
    assert "UTKFace.tar.gz" in result.stderr and "UTKFace/" in result.stderr
    assert not workdir.exists() and not data_dir.exists()
