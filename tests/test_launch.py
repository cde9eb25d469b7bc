"""The launchers' dry runs: the commands they would run on Cloud TPU VMs and SLURM (no cloud or
cluster is reachable from the tests, so the plans are what can be checked)."""

import shlex
import subprocess

import pytest

from helpers import ROOT


def dry_run(script, *args) -> list[str]:
    result = subprocess.run(["bash", f"launch/{script}", "--dry-run", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def commands(lines) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in lines if line.startswith("+ gcloud")]


def test_tpu_vm_default_plan_is_a_multi_host_slice_training_utk_into_a_bucket():
    lines = dry_run("tpu_vm.sh")
    assert lines[0].startswith("# v5litepod-32: 8 host(s)")
    create, copy, install, train, stream = commands(lines)
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert "--accelerator-type=v5litepod-32" in create
    assert "--worker=all" in copy and "--worker=all" in install and "--worker=all" in train
    assert "pip install" in install[-1] and "jax[tpu]" in install[-1]
    command = shlex.split(train[-1].split("=", 1)[1])
    assert command[command.index("-m") + 1] == "faceaging.main"
    assert "--jax_distributed" in command and "--config=configs/utk.py" in command
    workdir = next(a for a in command if a.startswith("--workdir="))
    assert workdir.startswith("--workdir=gs://")
    assert any(a.startswith("--config.data.data_dir=gs://") for a in command)
    assert "--worker=0" in stream and "tail" in stream[-1]


def test_tpu_vm_flags_reach_the_commands():
    lines = dry_run("tpu_vm.sh", "--accelerator=v4-32", "--queued", "--spot", "--project=p",
                    "--zone=us-central2-b", "--workdir=gs://b/runs/x", "--",
                    "--config.train.steps=10")
    assert lines[0].startswith("# v4-32: 4 host(s)")
    create = commands(lines)[0]
    assert create[3:5] == ["queued-resources", "create"]
    assert {"--spot", "--project=p", "--zone=us-central2-b", "--accelerator-type=v4-32"} <= set(create)
    train = commands(lines)[3][-1]
    assert "--workdir=gs://b/runs/x" in train and "--config.train.steps=10" in train
    assert "--config.data.data_dir=gs://b/tensorflow_datasets" in train
    delete = commands(dry_run("tpu_vm.sh", "--delete", "--workdir=gs://b/r"))
    assert delete == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "faceaging",
                       "--zone=us-west4-a", "--quiet"]]


@pytest.mark.parametrize("workdir", ["", "/local/disk/run"])
def test_tpu_vm_refuses_a_workdir_outside_a_bucket(workdir):
    args = [f"--workdir={workdir}"] if workdir else []
    result = subprocess.run(["bash", "launch/tpu_vm.sh", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "gs://" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_slurm_plan_runs_one_distributed_process_per_node_and_requeues_after_a_stop():
    lines = dry_run("slurm.sh", "--nodes=4", "--gpus_per_node=4", "--partition=gpu",
                    "--workdir=/shared/runs/utk", "--", "--config.train.batch_size=64")
    assert lines[0] == "# 4 node(s) x 4 GPU(s): 4 process(es) of one run (--jax_distributed)"
    assert {"#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
            "#SBATCH --partition=gpu", "#SBATCH --requeue"} <= set(lines)
    srun = shlex.split(next(line for line in lines if line.startswith("srun ")))
    assert srun[srun.index("-m") + 1] == "faceaging.main"
    assert {"--jax_distributed", "--workdir=/shared/runs/utk", "--config=configs/utk.py",
            "--config.train.batch_size=64"} <= set(srun)
    assert any("scontrol requeue" in line for line in lines)
    assert any(line.startswith("if [[ $code == 75 ]]") for line in lines)
